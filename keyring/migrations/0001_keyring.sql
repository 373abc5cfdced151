-- The keyring: the same ordered map as sled's (a tree byte and a key, then the value);
-- bytea compares byte by byte, as sled orders its keys.
CREATE TABLE sealpost_schema (version integer NOT NULL);
CREATE TABLE sealpost_keyring (k bytea PRIMARY KEY, v bytea NOT NULL)
