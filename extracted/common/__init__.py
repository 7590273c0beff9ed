"""What the extracted services share: registry join/leave, JWT auth, the load-balancer client."""
