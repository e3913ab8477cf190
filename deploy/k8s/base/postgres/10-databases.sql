-- The two databases the services expect; each applies its own migrations.
CREATE DATABASE balance;
CREATE DATABASE reservation;
