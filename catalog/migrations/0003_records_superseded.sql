-- Records of an upsert batch replaced by a later record of the same key in the batch.
ALTER TABLE catalog_runs ADD COLUMN records_superseded BIGINT NOT NULL DEFAULT 0;
