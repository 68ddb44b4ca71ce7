//! The control plane: sources of configuration, the index, the compiler and publishing.

pub mod code;
pub mod compile;
pub mod dirwatch;
pub mod dns;
pub mod file;
pub mod files;
#[cfg(feature = "kubernetes")]
pub mod kube;
/// Without the `kubernetes` feature, of Kubernetes mode only the index and the EndpointSlice
/// reader (no apiserver client): `tidegate validate --kubernetes` reads manifests offline.
#[cfg(not(feature = "kubernetes"))]
pub mod kube {
    #[path = "endpoints.rs"]
    pub mod endpoints;
    #[path = "index.rs"]
    pub mod index;
    #[path = "referenced.rs"]
    pub mod referenced;
}
pub mod manifests;
pub mod migrate;
pub mod names;
pub mod objects;
pub mod pace;
pub mod publish;
pub mod reload;
pub mod snapshot;

pub use compile::{CompileCache, CompileOptions, Compiled, compile, compile_cached};
pub use snapshot::{Accepted, Meta, Obj, Snapshot};
