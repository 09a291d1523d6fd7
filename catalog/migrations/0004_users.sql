-- Users of the query server: the roles of the access policy they hold and a SCRAM-SHA-256 verifier (salted,
-- iterated; never a password). The lake does not record them, so `catalog rebuild` keeps them: back them up
-- with the catalog database.
CREATE TABLE catalog_users (
    name TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    verifier TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
