//! [`AuthenticateLayer`].

use tower_layer::Layer;

use super::service::Authenticate;
use crate::Directory;

/// Authenticates requests by API key ([`Directory::authenticate`]).
///
/// The key comes from `Authorization: Bearer <key>`. A missing or unknown
/// key is answered `401` with `WWW-Authenticate: Bearer`; a suspended
/// tenant `403`. Otherwise the request goes on with an
/// `Arc<TenantContext>` in its extensions. The key is never logged.
#[derive(Clone, Debug)]
pub struct AuthenticateLayer {
    directory: Directory,
}

impl AuthenticateLayer {
    /// Authenticates against `directory`.
    pub fn new(directory: Directory) -> Self {
        AuthenticateLayer { directory }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate::new(inner, self.directory.clone())
    }
}
