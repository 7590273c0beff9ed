-- One database per owner of data (run once, when the volume is new). The
-- monolith's comes from POSTGRES_DB; users and messages each get their own,
-- as strangler.toml gives each its own `database`.
CREATE DATABASE users;
CREATE DATABASE messages;
