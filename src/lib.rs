//! Tidegate: a Kubernetes ingress controller and API gateway.
//!
//! The crate is the engine behind the `tidegate` binary and a library: [`Gateway::builder`]
//! runs the same control loop and proxy from Rust code.
//!
//! Module map (see ARCHITECTURE.md): [`api`] (the CRDs) → [`controller`] (sources, compile) →
//! [`model`] (the immutable routing table) ← [`proxy`] (the data plane), plus [`admin`].
// No unsafe code but in the two modules that a measured need asks for (STYLE.md 9), both on
// the native HTTP/1.1 path: its recycled boxes (`proxy::transport::recycle`), which take
// the last per-request allocations off the request path (issue #16), and header values taken
// from heads httparse has checked without checking them again (`proxy::transport::h1::value`).
// Each allows `unsafe_code` itself.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod controller;
mod gateway;
pub mod model;
pub mod proxy;
pub mod telemetry;

pub use gateway::{Gateway, GatewayBuilder, GatewayError};
pub use proxy::Middleware;
