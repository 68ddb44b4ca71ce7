//! Annotation names Tidegate reads, in one place.

/// On a canary Service: the primary Service it takes traffic from.
pub const CANARY_OF: &str = "tidegate.dev/canary-of";
/// On a canary Service: percent (0-100) of the primary's traffic it gets.
pub const CANARY_WEIGHT: &str = "tidegate.dev/canary-weight";
/// On a canary Service: a request header whose value `always`/`never` decides.
pub const CANARY_HEADER: &str = "tidegate.dev/canary-header";
/// On a canary Service: a cookie whose value `always`/`never` decides.
pub const CANARY_COOKIE: &str = "tidegate.dev/canary-cookie";
/// On an IngressClass: Ingresses without a class belong to it.
pub const IS_DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
/// On an Ingress: the class, the way before `spec.ingressClassName`.
pub const LEGACY_INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
/// On an Ingress: ingress-nginx's annotations, under its prefix or ours (the same names after
/// it). What each does: `controller::compile::ingress_annotations`.
pub const INGRESS_ANNOTATION_PREFIXES: [&str; 2] =
    ["nginx.ingress.kubernetes.io/", "tidegate.dev/"];
/// On an EndpointSlice: the Service it belongs to (a label).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
