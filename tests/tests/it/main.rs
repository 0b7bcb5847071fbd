//! The integration tests: one binary (one link of libtorch and DataFusion), one module per
//! flow, all against real services on loopback started through [`tests`] (the harness crate).

mod cassandra;
mod closed_loop;
mod consumer_group;
mod data_path;
mod deploy;
mod drift_replay;
mod encryption;
mod flight;
mod flight_sql;
mod kafka_eos;
mod kafka_failures;
mod kafka_tls;
mod metadata_store;
mod minilm;
mod model_reload;
mod observability;
mod openapi_contract;
mod raw_data;
mod remotes;
mod replicas;
mod reproducible;
mod rest_auth;
mod resume_offset;
mod scorer_restart;
mod skeleton;
mod torchscript;
mod tuning;
mod web_ui;
