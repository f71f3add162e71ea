//! End-to-end tests: a real Redis, a real OpenID Provider (oidc-provider on Node), a real
//! upstream API that introspects every token, and Vestibule, all on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

mod assertion;
mod audit;
mod backchannel_logout;
mod browser;
mod bundle;
mod cli;
mod client_assertion;
mod client_helper;
mod cookies;
mod credentials;
mod discovery;
mod doctor;
mod dpop;
mod dpop_upstream;
mod escrow;
mod frontend;
mod health;
mod key_rotation;
mod keycloak;
mod keycloak_client_assertion;
mod keycloak_credentials;
mod keycloak_demo;
mod keycloak_dpop;
mod keycloak_exchange;
mod keycloak_routes;
mod limits;
mod load_balancer;
mod login;
mod logout;
mod metrics;
mod multi_provider;
mod my_sessions;
mod node_suites;
mod opened_records;
mod operator;
mod par;
mod profiles;
mod provider_grants;
mod provider_matrix;
mod provider_simulations;
mod provider_tls;
mod proxy;
mod realtime;
mod redis_topologies;
mod refresh;
mod request_ids;
mod routes;
mod sender_constrained;
mod server;
mod session_watch;
mod shutdown;
mod step_up;
mod storage;
mod suspicious_use;
mod tenants;
mod traces;
mod userinfo;
