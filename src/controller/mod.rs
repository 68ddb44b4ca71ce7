//! The control plane: sources of configuration, the index, the compiler and publishing.

pub mod compile;
pub mod file;
pub mod kube;
pub mod manifests;
pub mod names;
pub mod objects;
pub mod publish;
pub mod reload;
pub mod snapshot;

pub use compile::{CompileOptions, Compiled, compile};
pub use snapshot::{Accepted, Meta, Obj, Snapshot};
