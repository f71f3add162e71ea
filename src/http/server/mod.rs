//! The server half of the HTTP surface: accepting connections and bounding them, working out
//! who is calling (client address, request id, trusted trace context), opening each request's
//! scope and dispatching it to an endpoint or to an API route. Nothing here knows what an
//! endpoint does.

pub mod accept;
pub mod client_address;
pub mod connection;
pub mod dispatch;
pub mod request_id;
pub mod scope;
pub mod trace_context;
