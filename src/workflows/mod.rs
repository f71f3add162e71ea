//! The user-facing workflows the HTTP endpoints invoke: a login (its start and its callback)
//! and the ending of sessions (by cookie, or found without one). Each runs across the
//! protocol, session and audit layers; none reads a request or writes a response, so the
//! endpoints stay translations and the workflows can be followed in one place.

pub mod ending;
pub mod login;
