//! Certificates: `kubernetes.io/tls` Secrets → checked [`Certificate`]s, and the host names
//! Routes and Ingresses claim with them → the [`TlsTable`] the HTTPS listener serves.
//!
//! A Secret that is missing or unusable is a diagnostic on every object that references it;
//! the last certificate that Secret held while it was good keeps serving.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::api::{ClientValidationMode, LocalObjectRef};
use crate::controller::objects::{SECRET_TYPE_TLS, SecretInfo};
use crate::controller::snapshot::{Accepted, Snapshot};
use crate::model::{
    CaBundle, Certificate, ClientValidation, Diagnostic, Kind, ObjectRef, Reason, Rule, Severity,
    TlsHost, TlsTable,
};

use super::fields;
use super::{CompileOptions, DefaultCertificate};

/// The HTTPS side of a compile: the certificates of the accepted Routes' `spec.tls` and the
/// Ingresses' `tls`, and the default certificate. Rules of hosts served over HTTPS get their
/// redirect here (a Route's `httpsRedirect`; an Ingress's `tls` hosts unless its
/// `ssl-redirect` annotation is `"false"`), but only once a certificate serves them.
/// `b` already holds the certificates the Backends present to their endpoints (mTLS).
pub fn build(
    mut b: TlsBuilder<'_>,
    opts: &CompileOptions,
    chosen: &Accepted,
    rules: &mut [Arc<Rule>],
    route_rules: usize,
    diags: &mut Vec<Diagnostic>,
) -> (TlsTable, AcceptedCertificates, AcceptedCaFiles) {
    match &opts.default_certificate {
        Some(DefaultCertificate::Secret { namespace, name }) => {
            b.set_default(namespace, name, diags)
        }
        Some(DefaultCertificate::Files { cert, key }) => b.set_default_files(cert, key, diags),
        None => {}
    }
    // (object, hosts served over HTTPS) of the objects that ask for a redirect.
    let mut redirect: BTreeMap<ObjectRef, Vec<String>> = BTreeMap::new();
    let mut validation: BTreeMap<ObjectRef, Arc<ClientValidation>> = BTreeMap::new();
    for (id, obj) in chosen.routes.iter() {
        let Some(tls) = &obj.spec.tls else { continue };
        let mut found = Vec::new();
        let client_validation = tls.client_validation.as_ref().map(|v| {
            let at = "spec.tls.clientValidation";
            let ca = match b.ca_from(
                &id.namespace,
                at,
                v.ca_secret_ref.as_ref(),
                v.ca_config_map_ref.as_ref(),
                v.ca_file.as_deref(),
            ) {
                Some(CaResolved { bundle, problem }) => {
                    if let Some((field, why)) = problem {
                        // A file whose last good bundle still verifies is a warning.
                        let (severity, tail) = if bundle.is_some() {
                            (Severity::Warning, "")
                        } else {
                            (
                                Severity::Error,
                                "; no client certificate is accepted until it is fixed",
                            )
                        };
                        found.push(Diagnostic {
                            severity,
                            ..Diagnostic::error(
                                id,
                                &field,
                                Reason::InvalidCertificateRef,
                                format!("{why}{tail}"),
                            )
                        });
                    }
                    bundle
                }
                None => {
                    found.push(Diagnostic::error(
                        id,
                        at,
                        Reason::InvalidCertificateRef,
                        "set caSecretRef, caConfigMapRef or caFile; no client certificate is \
                         accepted until it is fixed",
                    ));
                    None
                }
            };
            let v = Arc::new(ClientValidation {
                ca,
                required: v.mode == ClientValidationMode::Require,
                nginx_headers: None,
            });
            validation.insert(id.clone(), v.clone());
            v
        });
        let hostnames: Vec<String> = obj
            .spec
            .hostnames
            .iter()
            .filter_map(|h| fields::hostname(h, true).ok())
            .collect();
        let field = "spec.tls.secretName";
        if hostnames.is_empty() {
            found.push(warning(
                id,
                field,
                "the Route has no spec.hostnames, so no server name selects this certificate \
                 (HTTPS requests reach the Route through the default certificate)"
                    .to_owned(),
            ));
        }
        if let Some(i) = b.certificate(&id.namespace, &tls.secret_name, id, field, &mut found) {
            b.claim_with(i, &hostnames, id, field, client_validation, &mut found);
            // Without hostnames only the default certificate serves the Route over HTTPS:
            // without one, a redirect would send clients to a failing handshake.
            if tls.https_redirect == Some(true) && (!hostnames.is_empty() || b.default.is_some()) {
                redirect.insert(id.clone(), Vec::new());
            }
        }
        diags.extend(
            found
                .into_iter()
                .map(|d| d.in_file(obj.meta.file.as_deref())),
        );
    }
    for (id, obj) in &chosen.ingresses {
        let ing = &obj.spec;
        // Its hosts' TLS is the backends' (a warning on spec.tls says so).
        if super::ingress_passthrough::on(&ing.annotations) {
            continue;
        }
        let mut hosts = Vec::new();
        let client_validation = super::ingress_auth_tls::settings(&ing.annotations, id)
            .map(|a| ingress_client_validation(&mut b, id, &a, diags));
        if let Some(v) = &client_validation {
            validation.insert(id.clone(), v.clone());
        }
        for (i, tls) in ing.tls.iter().enumerate() {
            let mut names: Vec<String> = tls
                .hosts
                .iter()
                .filter_map(|h| fields::hostname(h, true).ok())
                .collect();
            if tls.hosts.is_empty() {
                names = ing
                    .rules
                    .iter()
                    .filter_map(|r| r.host.as_deref())
                    .filter_map(|h| fields::hostname(h, true).ok())
                    .collect();
            }
            match &tls.secret_name {
                Some(secret) => {
                    let field = format!("spec.tls[{i}].secretName");
                    if let Some(c) = b.certificate(&id.namespace, secret, id, &field, diags) {
                        b.claim_with(c, &names, id, &field, client_validation.clone(), diags);
                        hosts.extend(names);
                    }
                }
                None if b.default.is_some() => {
                    if client_validation.is_some() {
                        diags.push(warning(
                            id,
                            &format!("spec.tls[{i}]"),
                            "no secretName: the default certificate serves these hosts and asks \
                             no client for a certificate, so the Ingress's requests on them are \
                             refused (403; auth-tls-secret needs a tls entry with secretName)"
                                .to_owned(),
                        ));
                    }
                    hosts.extend(names)
                }
                None => diags.push(warning(
                    id,
                    &format!("spec.tls[{i}]"),
                    "no secretName and no --default-certificate: these hosts are not served \
                     over HTTPS"
                        .to_owned(),
                )),
            }
        }
        if !hosts.is_empty() && super::ingress_annotations::ssl_redirect(&ing.annotations) {
            redirect.insert(id.clone(), hosts);
        }
    }
    // The first `route_rules` are the Routes', made without a redirect or client validation:
    // when no Route has either, they stay so, and are not read again (at 10,000 Routes that
    // reading, a cache miss a rule, was most of this function).
    let from = if validation
        .keys()
        .chain(redirect.keys())
        .any(|id| id.kind == Kind::Route)
    {
        0
    } else {
        debug_assert!(rules[..route_rules].iter().all(|r| !r.https_redirect
            && !r.https_redirect_strips_slash
            && r.client_validation.is_none()));
        route_rules
    };
    for rule in rules[from..].iter_mut() {
        let client_validation = validation.get(&rule.route).cloned();
        // Already set: an Ingress's force-ssl-redirect (every host, TLS here or not).
        let https_redirect = rule.https_redirect
            || match redirect.get(&rule.route) {
                None => false,
                Some(_) if rule.route.kind == Kind::Route => true,
                Some(hosts) => rule.hostnames.iter().any(|h| hosts.contains(h)),
            };
        // Set for every Ingress rule; it matters (and shows in /config) with the redirect.
        let strips_slash = rule.https_redirect_strips_slash && https_redirect;
        let same_validation = match (&rule.client_validation, &client_validation) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        // A rule shared with an earlier table (its Route unchanged) is copied only if it changes.
        if !same_validation
            || https_redirect != rule.https_redirect
            || strips_slash != rule.https_redirect_strips_slash
        {
            let rule = Arc::make_mut(rule);
            rule.client_validation = client_validation;
            rule.https_redirect = https_redirect;
            rule.https_redirect_strips_slash = strips_slash;
        }
    }
    b.finish()
}

/// The client validation of an Ingress with `auth-tls-secret` (`a`): the Secret's `ca.crt`
/// (a problem with it is an error, and no certificate verifies until it is fixed), and
/// ingress-nginx's `ssl-client-*` headers.
fn ingress_client_validation(
    b: &mut TlsBuilder<'_>,
    id: &ObjectRef,
    a: &super::ingress_auth_tls::AuthTls,
    diags: &mut Vec<Diagnostic>,
) -> Arc<ClientValidation> {
    let secret = LocalObjectRef {
        name: a.secret.clone(),
    };
    let field = format!("metadata.annotations[{}]", a.key);
    let crl = b
        .snap
        .secrets
        .get(&(id.namespace.to_string(), a.secret.clone()))
        .is_some_and(|s| s.has_crl);
    if crl {
        // Accepting a certificate its issuer revoked would open what the list closes.
        diags.push(Diagnostic::error(
            id,
            &field,
            Reason::NotSupported,
            format!(
                "not supported yet: Secret {}/{} has ca.crl, and Tidegate does not check \
                 revocation lists yet; no client certificate is accepted until it is removed",
                id.namespace, a.secret
            ),
        ));
    }
    let ca = match b.ca_from(&id.namespace, "", Some(&secret), None, None) {
        Some(CaResolved {
            bundle,
            problem: Some((_, why)),
        }) => {
            diags.push(Diagnostic::error(
                id,
                &field,
                Reason::InvalidCertificateRef,
                format!("{why}; no client certificate is accepted until it is fixed"),
            ));
            bundle
        }
        Some(r) => r.bundle,
        None => None,
    };
    Arc::new(ClientValidation {
        ca: ca.filter(|_| !crl),
        required: a.required,
        nginx_headers: Some(crate::model::NginxCertHeaders {
            pass_certificate: a.pass_certificate,
        }),
    })
}

/// The last good certificate of each Secret, with the contents it was parsed from.
pub type AcceptedCertificates = BTreeMap<(String, String), (SecretInfo, Arc<Certificate>)>;

/// A Secret's certificate as this compile resolved it.
#[derive(Clone)]
struct Resolved {
    /// Index in `certificates`, when a certificate (current or last good) serves.
    index: Option<usize>,
    /// Why the current contents are not used.
    problem: Option<String>,
}

/// Builds the [`TlsTable`]: Secrets are parsed once per compile, host names claimed in the
/// order objects are compiled (the first claim of a host wins).
pub struct TlsBuilder<'a> {
    snap: &'a Snapshot,
    resolved: BTreeMap<(String, String), Resolved>,
    certificates: Vec<Arc<Certificate>>,
    hosts: Vec<TlsHost>,
    default: Option<usize>,
    /// What the next compile keeps as last good.
    pub accepted: AcceptedCertificates,
    /// The CA bundles of files the next compile keeps as last good.
    ca_files: AcceptedCaFiles,
}

impl<'a> TlsBuilder<'a> {
    pub fn new(snap: &'a Snapshot) -> Self {
        Self {
            snap,
            resolved: BTreeMap::new(),
            certificates: Vec::new(),
            hosts: Vec::new(),
            default: None,
            accepted: BTreeMap::new(),
            ca_files: BTreeMap::new(),
        }
    }

    /// The certificate of Secret `namespace/name`, referenced by `owner` at `field`: its index,
    /// or `None` (then a diagnostic says why). A broken Secret that held a good certificate
    /// before keeps serving that one (the diagnostic says so).
    pub fn certificate(
        &mut self,
        namespace: &str,
        name: &str,
        owner: &ObjectRef,
        field: &str,
        out: &mut Vec<Diagnostic>,
    ) -> Option<usize> {
        let key = (namespace.to_owned(), name.to_owned());
        if !self.resolved.contains_key(&key) {
            let r = self.resolve(&key);
            self.resolved.insert(key.clone(), r);
        }
        let r = &self.resolved[&key];
        if let Some(problem) = &r.problem {
            let tail = if r.index.is_some() {
                "; the last good certificate of this Secret keeps serving"
            } else {
                ""
            };
            out.push(bad_secret(
                owner,
                field,
                namespace,
                name,
                format_args!("{problem}{tail}"),
            ));
        }
        r.index
    }

    /// [`Self::certificate`] for a Secret of any type holding `tls.crt` and `tls.key` (an
    /// Ingress's `proxy-ssl-secret`, often Opaque, as ingress-nginx reads it). An Opaque
    /// Secret is parsed each compile, without a last good version.
    pub fn certificate_any_type(
        &mut self,
        namespace: &str,
        name: &str,
        owner: &ObjectRef,
        field: &str,
        out: &mut Vec<Diagnostic>,
    ) -> Option<usize> {
        let key = (namespace.to_owned(), name.to_owned());
        let secret = match self.snap.secrets.get(&key) {
            Some(s) if s.type_.as_deref() != Some(SECRET_TYPE_TLS) => s,
            _ => return self.certificate(namespace, name, owner, field, out),
        };
        match parse_secret(&format!("{namespace}/{name}"), secret, self.snap.now) {
            Ok(cert) => Some(self.push(Arc::new(cert))),
            Err(problem) => {
                out.push(bad_secret(owner, field, namespace, name, problem));
                None
            }
        }
    }

    /// The certificate at `index` (from [`Self::certificate`]).
    pub fn get(&self, index: usize) -> Arc<Certificate> {
        self.certificates[index].clone()
    }

    /// The CA bundle in the `ca.crt` of Secret `namespace/name` (of any type); `Err` says why
    /// there is none.
    pub fn ca_bundle(&self, namespace: &str, name: &str) -> Result<Arc<CaBundle>, String> {
        let key = (namespace.to_owned(), name.to_owned());
        let fail = |why: &str| format!("Secret {namespace}/{name}: {why}");
        let secret = self
            .snap
            .secrets
            .get(&key)
            .ok_or_else(|| fail("not found"))?;
        let pem = secret.ca.as_ref().ok_or_else(|| fail("has no ca.crt"))?;
        parse_ca_bundle(&format!("{namespace}/{name}"), pem)
            .map_err(|e| fail(&e))
            .map(Arc::new)
    }

    /// The CA bundle in the `ca.crt` of ConfigMap `namespace/name`.
    pub fn ca_bundle_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<CaBundle>, String> {
        let key = (namespace.to_owned(), name.to_owned());
        let fail = |why: &str| format!("ConfigMap {namespace}/{name}: {why}");
        let map = self
            .snap
            .config_maps
            .get(&key)
            .ok_or_else(|| fail("not found"))?;
        let pem = map.ca.as_ref().ok_or_else(|| fail("has no ca.crt"))?;
        parse_ca_bundle(&format!("configmap {namespace}/{name}"), pem)
            .map_err(|e| fail(&e))
            .map(Arc::new)
    }

    /// The CA bundle a `caSecretRef` / `caConfigMapRef` / `caFile` set at `at` names: `None`
    /// when none is set, else the bundle that serves and, when the current contents are not
    /// used, (the field, why). Only a file keeps serving its last good bundle: a Secret or
    /// ConfigMap that breaks leaves no bundle (what it verifies fails closed).
    pub fn ca_from(
        &mut self,
        namespace: &str,
        at: &str,
        secret: Option<&LocalObjectRef>,
        config_map: Option<&LocalObjectRef>,
        file: Option<&str>,
    ) -> Option<CaResolved> {
        let failed = |field: &str, why: String| CaResolved {
            bundle: None,
            problem: Some((format!("{at}.{field}"), why)),
        };
        let resolved = |field: &str, r: Result<Arc<CaBundle>, String>| match r {
            Ok(b) => CaResolved {
                bundle: Some(b),
                problem: None,
            },
            Err(why) => failed(field, why),
        };
        Some(match (secret, config_map, file) {
            (Some(s), None, None) => resolved("caSecretRef", self.ca_bundle(namespace, &s.name)),
            (None, Some(c), None) => resolved(
                "caConfigMapRef",
                self.ca_bundle_config_map(namespace, &c.name),
            ),
            (None, None, Some(path)) => {
                let (bundle, problem) = self.ca_file(path);
                CaResolved {
                    bundle,
                    problem: problem.map(|why| (format!("{at}.caFile"), why)),
                }
            }
            (None, None, None) => return None,
            _ => CaResolved {
                bundle: None,
                problem: Some((
                    at.to_owned(),
                    "set only one of caSecretRef, caConfigMapRef or caFile".to_owned(),
                )),
            },
        })
    }

    /// The CA bundle in file `path`, as the source read it into [`Snapshot::files`]: the
    /// bundle that serves (the current one, or the last good one while the file is missing or
    /// broken) and why the current contents are not used.
    fn ca_file(&mut self, path: &str) -> (Option<Arc<CaBundle>>, Option<String>) {
        let key = std::path::PathBuf::from(path);
        let current = match absolute(path).and_then(|()| file_contents(self.snap, path)) {
            Ok(pem) => parse_ca_bundle(&format!("file {path}"), &pem)
                .map_err(|e| format!("file {path}: {}", e.replace("ca.crt", "the file")))
                .map(Arc::new),
            Err(e) => Err(e),
        };
        match current {
            Ok(bundle) => {
                self.ca_files.insert(key, bundle.clone());
                (Some(bundle), None)
            }
            Err(why) => match self.snap.accepted.ca_files.get(&key).cloned() {
                Some(last) => {
                    self.ca_files.insert(key, last.clone());
                    (
                        Some(last),
                        Some(format!(
                            "{why}; the last good CA bundle of this file keeps serving"
                        )),
                    )
                }
                None => (None, Some(why)),
            },
        }
    }

    /// The certificate in PEM files `cert` and `key` (as the source read them), referenced by
    /// `owner` at `field`: its index, or `None`. A problem is a diagnostic naming the files;
    /// files that held a good certificate before keep serving it.
    pub fn certificate_files(
        &mut self,
        cert: &str,
        key: &str,
        owner: &ObjectRef,
        field: &str,
        out: &mut Vec<Diagnostic>,
    ) -> Option<usize> {
        if let Err(e) = absolute(cert).and_then(|()| absolute(key)) {
            out.push(Diagnostic::error(
                owner,
                field,
                Reason::InvalidCertificateRef,
                e,
            ));
            return None;
        }
        let r = self.resolve_files(std::path::Path::new(cert), std::path::Path::new(key));
        if let Some(problem) = &r.problem {
            let tail = if r.index.is_some() {
                "; the last good certificate of these files keeps serving"
            } else {
                ""
            };
            out.push(Diagnostic::error(
                owner,
                field,
                Reason::InvalidCertificateRef,
                format!("{problem}{tail}"),
            ));
        }
        r.index
    }

    fn resolve(&mut self, key: &(String, String)) -> Resolved {
        let secret = self.snap.secrets.get(key).cloned();
        self.resolve_with(key, secret, &format!("{}/{}", key.0, key.1))
    }

    /// Resolves `secret` (the current contents of the source `key`, if any), named `source`.
    fn resolve_with(
        &mut self,
        key: &(String, String),
        secret: Option<SecretInfo>,
        source: &str,
    ) -> Resolved {
        let last = self.snap.accepted.certificates.get(key);
        let current = match secret.as_ref() {
            None => Err("not found (or not of type kubernetes.io/tls)".to_owned()),
            Some(s) if s.type_.as_deref() != Some(SECRET_TYPE_TLS) => Err(format!(
                "has type {:?}, not {SECRET_TYPE_TLS}",
                s.type_.as_deref().unwrap_or("")
            )),
            Some(s) => match last.filter(|(seen, _)| seen == s) {
                // Unchanged since it was accepted: only the dates can have gone bad.
                Some((_, cert)) => check_dates(cert, self.snap.now).map(|()| cert.clone()),
                None => parse_secret(source, s, self.snap.now).map(Arc::new),
            },
        };
        match current {
            Ok(cert) => {
                let info = secret.unwrap_or_default();
                self.accepted.insert(key.clone(), (info, cert.clone()));
                Resolved {
                    index: Some(self.push(cert)),
                    problem: None,
                }
            }
            Err(problem) => {
                let index = last.map(|(info, cert)| {
                    self.accepted
                        .insert(key.clone(), (info.clone(), cert.clone()));
                    self.push(cert.clone())
                });
                Resolved {
                    index,
                    problem: Some(problem),
                }
            }
        }
    }

    fn push(&mut self, cert: Arc<Certificate>) -> usize {
        self.certificates.push(cert);
        self.certificates.len() - 1
    }

    /// Serves certificate `index` for `hostnames` (lower-case, `*.` wildcards), claimed by
    /// `owner`. A host another object claimed first keeps that object's certificate (a
    /// warning says so); a host the certificate does not cover is a warning.
    pub fn claim(
        &mut self,
        index: usize,
        hostnames: &[String],
        owner: &ObjectRef,
        field: &str,
        out: &mut Vec<Diagnostic>,
    ) {
        self.claim_with(index, hostnames, owner, field, None, out);
    }

    /// [`Self::claim`], asking the hosts' clients for certificates (`validation`).
    pub fn claim_with(
        &mut self,
        index: usize,
        hostnames: &[String],
        owner: &ObjectRef,
        field: &str,
        validation: Option<Arc<ClientValidation>>,
        out: &mut Vec<Diagnostic>,
    ) {
        for host in hostnames {
            let cert = &self.certificates[index];
            if !cert.covers(host) {
                out.push(warning(
                    owner,
                    field,
                    format!(
                        "the certificate of {} is not valid for {host} (it names {})",
                        cert.source,
                        cert.names.join(", ")
                    ),
                ));
            }
            match self.hosts.iter().find(|h| &h.hostname == host) {
                Some(first) if &first.owner != owner => out.push(warning(
                    owner,
                    field,
                    format!(
                        "{host} is already served over HTTPS with the certificate {} names \
                         ({} {}); that one is used",
                        first.owner.kind.as_str(),
                        first.owner.namespace,
                        first.owner.name
                    ),
                )),
                Some(_) => {}
                None => self.hosts.push(TlsHost {
                    hostname: host.clone(),
                    certificate: index,
                    client_validation: validation.clone(),
                    owner: owner.clone(),
                }),
            }
        }
    }

    /// The certificate for names no host claims (`--default-certificate NAMESPACE/NAME`).
    pub fn set_default(&mut self, namespace: &str, name: &str, out: &mut Vec<Diagnostic>) {
        let owner = ObjectRef::new(crate::model::Kind::Secret, namespace, name);
        self.default = self.certificate(namespace, name, &owner, "--default-certificate", out);
    }

    /// The default certificate from PEM files (`--default-certificate CERT,KEY`), as the
    /// source read them into [`Snapshot::files`]. Problems are reported on the certificate file.
    pub fn set_default_files(
        &mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
        out: &mut Vec<Diagnostic>,
    ) {
        let r = self.resolve_files(cert, key);
        let source = cert.display().to_string();
        if let Some(problem) = &r.problem {
            let tail = if r.index.is_some() {
                "; the last good certificate of these files keeps serving"
            } else {
                ""
            };
            out.push(Diagnostic {
                object: None,
                file: Some(source),
                field: "--default-certificate".to_owned(),
                severity: Severity::Error,
                reason: Reason::InvalidCertificateRef,
                message: format!("{problem}{tail}"),
            });
        }
        self.default = r.index;
    }

    /// Resolves the certificate in PEM files `cert` and `key`; problems name the file.
    fn resolve_files(&mut self, cert: &std::path::Path, key: &std::path::Path) -> Resolved {
        let read = |p: &std::path::Path| file_contents(self.snap, &p.display().to_string());
        let secret = match (read(cert), read(key)) {
            (Ok(c), Ok(k)) => Ok(SecretInfo {
                type_: Some(SECRET_TYPE_TLS.to_owned()),
                cert: Some(c),
                key: Some(k),
                ca: None,
                auth: None,
                jwks: None,
                has_crl: false,
            }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let source = cert.display().to_string();
        // Files have no namespace: "" keeps them apart from Secrets in `Accepted`.
        let id = (String::new(), source.clone());
        match secret {
            Ok(s) => self.resolve_with(&id, Some(s), &source),
            Err(e) => {
                let mut r = self.resolve_with(&id, None, &source);
                r.problem = Some(e);
                r
            }
        }
    }

    /// The table, and what the next compile keeps (certificates, CA bundles of files).
    pub fn finish(self) -> (TlsTable, AcceptedCertificates, AcceptedCaFiles) {
        (
            TlsTable::new(self.certificates, self.hosts, self.default),
            self.accepted,
            self.ca_files,
        )
    }
}

/// The last good CA bundle of each file (`caFile`): served while the file is missing or broken.
pub type AcceptedCaFiles = BTreeMap<std::path::PathBuf, Arc<CaBundle>>;

/// What a CA source resolved to (see [`TlsBuilder::ca_from`]).
pub struct CaResolved {
    /// The bundle that verifies peers; `None`: nothing verifies (fails closed).
    pub bundle: Option<Arc<CaBundle>>,
    /// (field, why) when the current contents are not used.
    pub problem: Option<(String, String)>,
}

/// Files objects name must be absolute: what they mean cannot depend on the working directory.
fn absolute(path: &str) -> Result<(), String> {
    if std::path::Path::new(path).is_absolute() {
        Ok(())
    } else {
        Err(format!("file {path}: not an absolute path"))
    }
}

/// The bytes of file `path` as the source read them into [`Snapshot::files`].
fn file_contents(snap: &Snapshot, path: &str) -> Result<bytes::Bytes, String> {
    match snap.files.get(std::path::Path::new(path)) {
        Some(Ok(b)) => Ok(b.clone()),
        Some(Err(e)) => Err(format!("file {path}: {e}")),
        None => Err(format!("file {path}: not read")),
    }
}

fn warning(owner: &ObjectRef, field: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(owner, field, Reason::InvalidCertificateRef, message)
    }
}

/// Parses and checks a Secret's `tls.crt` (chain, leaf first) and `tls.key`.
fn parse_secret(source: &str, s: &SecretInfo, now: i64) -> Result<Certificate, String> {
    let (Some(cert), Some(key)) = (&s.cert, &s.key) else {
        return Err("needs both tls.crt and tls.key".to_owned());
    };
    parse_certificate(source, cert, key, now)
}

/// Parses a PEM chain and key, and checks that the key matches the leaf, that every
/// certificate parses, and that the leaf is valid at `now` (Unix seconds).
pub fn parse_certificate(
    source: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
    now: i64,
) -> Result<Certificate, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key holds no usable private key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    match CertifiedKey::new(chain.clone(), signer).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err("tls.key does not match the certificate in tls.crt".to_owned()),
    }
    let mut leaf = None;
    for (i, der) in chain.iter().enumerate() {
        let (_, parsed) = X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {} of tls.crt does not parse: {e}", i + 1))?;
        if i == 0 {
            leaf = Some(parsed);
        }
    }
    let leaf = leaf.ok_or("tls.crt holds no certificate")?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    let validity = leaf.validity();
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, &chain[0]);
    let cert = Certificate {
        source: source.into(),
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        fingerprint: fingerprint
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        chain,
        key,
    };
    check_dates(&cert, now)?;
    Ok(cert)
}

/// Parses a PEM CA bundle: at least one certificate, each usable as a trust anchor.
pub fn parse_ca_bundle(source: &str, pem: &[u8]) -> Result<CaBundle, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca.crt is not valid PEM: {e}"))?;
    if certificates.is_empty() {
        return Err("ca.crt holds no certificate".to_owned());
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, der) in certificates.iter().enumerate() {
        X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {} of ca.crt does not parse: {e}", i + 1))?;
        roots
            .add(der.clone())
            .map_err(|e| format!("certificate {} of ca.crt is not a usable CA: {e}", i + 1))?;
        digest.update(der);
    }
    Ok(CaBundle {
        source: source.into(),
        certificates,
        fingerprint: digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

fn check_dates(cert: &Certificate, now: i64) -> Result<(), String> {
    if now > cert.not_after {
        return Err(format!(
            "the certificate expired at {}",
            crate::model::unix_time(cert.not_after)
        ));
    }
    if now < cert.not_before {
        return Err(format!(
            "the certificate is not valid before {}",
            crate::model::unix_time(cert.not_before)
        ));
    }
    Ok(())
}

/// The error for a certificate reference to Secret `namespace/name` that gives none.
fn bad_secret(
    owner: &ObjectRef,
    field: &str,
    namespace: &str,
    name: &str,
    problem: impl std::fmt::Display,
) -> Diagnostic {
    Diagnostic::error(
        owner,
        field,
        Reason::InvalidCertificateRef,
        format!("Secret {namespace}/{name}: {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    mod compiled {
        use super::*;
        use crate::api::{BackendRef, RouteRule, RouteSpec, RouteTls};
        use crate::controller::compile::compile;
        use crate::controller::snapshot::{Meta, Obj};

        fn route(name: &str, hosts: &[&str], secret: &str, redirect: bool) -> Obj<RouteSpec> {
            Obj {
                meta: Meta::new(ObjectRef::new(Kind::Route, "default", name)),
                spec: std::sync::Arc::new(RouteSpec {
                    hostnames: hosts.iter().map(|h| h.to_string()).collect(),
                    tls: Some(Box::new(RouteTls {
                        secret_name: secret.into(),
                        https_redirect: Some(redirect),
                        hsts: None,
                        client_validation: None,
                    })),
                    rules: vec![RouteRule {
                        backend_refs: vec![BackendRef {
                            name: "missing".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }
        }

        fn secret(names: &[&str]) -> SecretInfo {
            let (cert, key) = self_signed(names);
            SecretInfo {
                type_: Some(SECRET_TYPE_TLS.into()),
                cert: Some(cert.into()),
                key: Some(key.into()),
                ca: None,
                auth: None,
                jwks: None,
                has_crl: false,
            }
        }

        fn snap(routes: Vec<Obj<RouteSpec>>, secrets: Vec<(&str, SecretInfo)>) -> Snapshot {
            Snapshot {
                routes: std::sync::Arc::new(
                    routes.into_iter().map(|o| (o.meta.id.clone(), o)).collect(),
                ),
                secrets: secrets
                    .into_iter()
                    .map(|(n, s)| (("default".to_owned(), n.to_owned()), s))
                    .collect(),
                now: now(),
                ..Default::default()
            }
        }

        fn messages(diags: &[Diagnostic]) -> Vec<String> {
            diags.iter().map(ToString::to_string).collect()
        }

        #[test]
        fn hosts_get_their_route_certificate_and_the_first_claim_wins() {
            let s = snap(
                vec![
                    route("a", &["shop.test"], "a-cert", true),
                    route("b", &["shop.test", "api.test"], "b-cert", false),
                ],
                vec![
                    ("a-cert", secret(&["shop.test"])),
                    ("b-cert", secret(&["api.test"])),
                ],
            );
            let out = compile(&s, &CompileOptions::default());
            let t = &out.table.tls;
            let source = |host: &str| {
                t.select(Some(host))
                    .map(|i| t.certificates[i].source.to_string())
            };
            assert_eq!(source("shop.test").as_deref(), Some("default/a-cert"));
            assert_eq!(source("api.test").as_deref(), Some("default/b-cert"));
            assert_eq!(source("other.test"), None);
            let m = messages(&out.table.diagnostics);
            assert!(
                m.iter().any(|d| d.contains("Route default/b")
                    && d.contains("shop.test is already served over HTTPS")
                    && d.contains("[warning]")),
                "{m:?}"
            );
            assert!(
                m.iter().any(|d| d.contains("not valid for shop.test")),
                "b-cert does not cover shop.test: {m:?}"
            );
            let redirects: Vec<_> = out
                .table
                .rules
                .iter()
                .map(|r| (&*r.route.name, r.https_redirect))
                .collect();
            assert_eq!(redirects, [("a", true), ("b", false)]);
        }

        #[test]
        fn a_broken_secret_keeps_its_last_good_certificate_and_a_missing_one_redirects_nothing() {
            let good = secret(&["shop.test"]);
            let first = compile(
                &snap(
                    vec![route("a", &["shop.test"], "cert", true)],
                    vec![("cert", good.clone())],
                ),
                &CompileOptions::default(),
            );
            assert!(
                !first
                    .table
                    .diagnostics
                    .iter()
                    .any(|d| d.reason == Reason::InvalidCertificateRef),
                "{:?}",
                first.table.diagnostics
            );
            let fingerprint = first.table.tls.certificates[0].fingerprint.clone();

            let broken = SecretInfo {
                key: Some(secret(&["shop.test"]).key.unwrap()),
                ..good
            };
            let mut s = snap(
                vec![route("a", &["shop.test"], "cert", true)],
                vec![("cert", broken)],
            );
            s.accepted = first.accepted.clone();
            let second = compile(&s, &CompileOptions::default());
            let m = messages(&second.table.diagnostics);
            assert!(
                m.iter().any(|d| d.contains("tls.key does not match")
                    && d.contains("the last good certificate of this Secret keeps serving")),
                "{m:?}"
            );
            let i = second.table.tls.select(Some("shop.test")).unwrap();
            assert_eq!(second.table.tls.certificates[i].fingerprint, fingerprint);
            assert!(second.table.rules[0].https_redirect);

            // Never good: nothing serves, and plain HTTP is not redirected to a failing handshake.
            let third = compile(
                &snap(vec![route("a", &["shop.test"], "nope", true)], vec![]),
                &CompileOptions::default(),
            );
            assert!(third.table.tls.select(Some("shop.test")).is_none());
            assert!(!third.table.rules[0].https_redirect);
            let m = messages(&third.table.diagnostics);
            assert!(
                m.iter()
                    .any(|d| d.contains("Secret default/nope: not found")),
                "{m:?}"
            );
        }

        #[test]
        fn the_default_certificate_serves_other_names() {
            let s = snap(
                vec![route("a", &["shop.test"], "a-cert", false)],
                vec![
                    ("a-cert", secret(&["shop.test"])),
                    ("fallback", secret(&["x.test"])),
                ],
            );
            let opts = CompileOptions {
                default_certificate: Some(DefaultCertificate::Secret {
                    namespace: "default".into(),
                    name: "fallback".into(),
                }),
                ..CompileOptions::default()
            };
            let out = compile(&s, &opts);
            let t = &out.table.tls;
            let source =
                |host: Option<&str>| t.select(host).map(|i| t.certificates[i].source.to_string());
            assert_eq!(
                source(Some("other.test")).as_deref(),
                Some("default/fallback")
            );
            assert_eq!(source(None).as_deref(), Some("default/fallback"));
            assert_eq!(source(Some("shop.test")).as_deref(), Some("default/a-cert"));
        }
    }

    #[test]
    fn a_good_certificate_parses_with_its_names() {
        let (cert, key) = self_signed(&["a.test", "*.b.test"]);
        let c = parse_certificate("ns/s", cert.as_bytes(), key.as_bytes(), now()).unwrap();
        assert_eq!(c.names, ["a.test", "*.b.test"]);
        assert!(c.covers("x.b.test"));
        assert!(!c.covers("b.test"));
        assert_eq!(c.fingerprint.len(), 64);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["a.test"]);
        let e =
            parse_certificate("ns/s", cert.as_bytes(), other_key.as_bytes(), now()).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn garbage_and_expired_certificates_are_refused() {
        let (cert, key) = self_signed(&["a.test"]);
        let e = parse_certificate("ns/s", b"nope", key.as_bytes(), now()).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let far = 100_000_000_000; // year 5138: past rcgen's default not_after (4096)
        let e = parse_certificate("ns/s", cert.as_bytes(), key.as_bytes(), far).unwrap_err();
        assert!(e.contains("expired at"), "{e}");
    }
}
