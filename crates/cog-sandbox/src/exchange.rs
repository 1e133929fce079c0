//! What a hook sees of a request and its response, and what it may change.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};

/// Which hook is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the inner service: request headers and body are writable.
    Request,
    /// After it: response headers and body are writable; the request is
    /// read-only.
    Response,
}

impl Phase {
    /// `request` or `response`, as in metrics and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

/// A plugin's answer in place of the service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400–599.
    pub status: StatusCode,
    /// The response body.
    pub body: Bytes,
}

/// One request/response pair as plugins see it. Hooks change it in place;
/// a body is `None` when it was not read for the plugins (they then cannot
/// read or replace it).
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// The tenant the request belongs to (scopes the plugin's KV data).
    pub tenant: Arc<str>,
    /// Request headers.
    pub request_headers: HeaderMap,
    /// Request body, when read.
    pub request_body: Option<Bytes>,
    /// Response status (response phase).
    pub status: Option<StatusCode>,
    /// Response headers (response phase).
    pub response_headers: HeaderMap,
    /// Response body, when read (response phase).
    pub response_body: Option<Bytes>,
    /// Set when a plugin rejected the request.
    pub rejected: Option<Rejection>,
}

impl Exchange {
    /// An exchange for a request with no body read.
    pub fn new(method: Method, uri: Uri, tenant: impl Into<Arc<str>>) -> Self {
        Exchange {
            method,
            uri,
            tenant: tenant.into(),
            request_headers: HeaderMap::new(),
            request_body: None,
            status: None,
            response_headers: HeaderMap::new(),
            response_body: None,
            rejected: None,
        }
    }
}
