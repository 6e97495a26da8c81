//! JSON request bodies: `application/json` only, strict parsing, and errors
//! that name the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body parsed strictly (request types deny unknown fields).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::Malformed("the body could not be read".into())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as `T`, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        classify(&path, &inner)
    })?;
    de.end().map_err(|e| ApiError::Malformed(e.to_string()))?;
    Ok(value)
}

fn classify(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::Malformed(e.to_string()),
        Category::Data => {
            let message = e.to_string();
            // serde names unknown and missing fields in the message, with
            // the path pointing at the enclosing object.
            let quoted = message.split('`').nth(1).filter(|_| {
                message.starts_with("unknown field") || message.starts_with("missing field")
            });
            let field = match (quoted, path) {
                (Some(name), ".") => name.to_owned(),
                (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
                (Some(name), p) => format!("{p}.{name}"),
                (None, p) => p.to_owned(),
            };
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            ApiError::invalid(field, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    fn field(bytes: &[u8]) -> String {
        match parse::<Body>(bytes) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(br#"{"email":"a","role":"owner"}"#), "role");
        assert_eq!(field(br#"{}"#), "email");
        assert_eq!(field(br#"{"email":1}"#), "email");
        assert_eq!(field(br#"{"email":"a","inner":{"n":300}}"#), "inner.n");
        assert!(matches!(
            parse::<Body>(br#"{"email":"#),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse::<Body>(br#"{"email":"a"} x"#),
            Err(ApiError::Malformed(_))
        ));
    }
}
