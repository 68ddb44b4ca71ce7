//! Errors of the Kubernetes source.

/// Why Kubernetes mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Neither in-cluster configuration nor a kubeconfig was found or usable.
    #[error("no Kubernetes configuration (in-cluster or KUBECONFIG) could be loaded: {0}")]
    Config(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// Objects could not be listed (`tidegate migrate --from-cluster`).
    #[error("cannot list {0}: {1}")]
    ListFailed(&'static str, #[source] kube::Error),
    /// A flag has a value that cannot work.
    #[error("{0}")]
    InvalidOption(String),
}
