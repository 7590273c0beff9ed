"""The services carved out of the monolith, one package each."""
