//! Responses in Salesforce's wire shapes. REST errors are always a JSON array of
//! `{"message","errorCode","fields"}`, and every authenticated response carries
//! `Sforce-Limit-Info`; both are built here so no handler can get them wrong.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::store::DmlError;

#[derive(Debug, Clone)]
pub enum RespBody {
    Empty,
    Json(Value),
    /// Body text and its content type (CSV results, plain-text errors).
    Text(String, &'static str),
}

/// A response before it becomes HTTP, so Composite can embed it as a subresponse.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub body: RespBody,
    pub headers: Vec<(&'static str, String)>,
}

impl Resp {
    pub fn json(status: StatusCode, v: Value) -> Self {
        Resp { status, body: RespBody::Json(v), headers: Vec::new() }
    }

    pub fn ok(v: Value) -> Self {
        Self::json(StatusCode::OK, v)
    }

    pub fn no_content() -> Self {
        Resp { status: StatusCode::NO_CONTENT, body: RespBody::Empty, headers: Vec::new() }
    }

    pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self::json(status, json!([{"message": message.into(), "errorCode": code}]))
    }

    pub fn errors(status: StatusCode, errors: &[DmlError]) -> Self {
        Self::json(status, Value::Array(errors.iter().map(DmlError::rest_json).collect()))
    }

    /// A DML failure with the status Salesforce uses for its code.
    pub fn dml(errors: &[DmlError]) -> Self {
        let status = match errors.first().map(|e| e.code) {
            Some("NOT_FOUND") | Some("ENTITY_IS_DELETED") => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::errors(status, errors)
    }

    pub fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
    }

    pub fn method_not_allowed(method: &http::Method, allowed: &str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
        )
    }

    pub fn bad_json(detail: impl std::fmt::Display) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            format!("Unexpected character in request body: {detail}"),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The body as JSON, for Composite subresponses (`null` when empty).
    pub fn body_json(&self) -> Value {
        match &self.body {
            RespBody::Empty => Value::Null,
            RespBody::Json(v) => v.clone(),
            RespBody::Text(t, _) => Value::String(t.clone()),
        }
    }
}

impl IntoResponse for Resp {
    fn into_response(self) -> Response {
        let mut builder = Response::builder().status(self.status);
        let body = match self.body {
            RespBody::Empty => Body::empty(),
            RespBody::Json(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
                Body::from(serde_json::to_vec(&v).unwrap_or_default())
            }
            RespBody::Text(t, ct) => {
                builder = builder.header(header::CONTENT_TYPE, ct);
                Body::from(t)
            }
        };
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                builder = builder.header(name, v);
            }
        }
        builder.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}
