//! End-to-end tests: one binary, one module per area. They use real Delta tables on local disk and on the
//! SeaweedFS S3 server of `ci/start-s3.sh`, and the real `lakehouse` binary where the CLI is the subject.

mod access;
mod audit_trail;
mod bad_input;
mod catalog;
mod cli;
mod erase;
mod exactly_once;
mod excel;
mod http;
mod ingest;
mod limits;
mod manifests;
mod nested;
mod openlineage;
mod optional_sources;
mod plan;
mod postgres;
mod privacy;
mod register;
mod run_log;
mod s3;
mod schedule;
mod serve;
mod storage_faults;
mod streams;
mod transform;
mod trust;
mod unique;
