//! Response plumbing shared by every listener: the boxed body type and small
//! constructors for plain-text and JSON answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use crate::runtime::Gateway;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = BoxBody<Bytes, BoxError>;

pub fn box_body<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    box_body(Full::new(bytes.into()))
}

pub fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    with_type(
        status,
        full(Bytes::from_static(body.as_bytes())),
        "text/plain; charset=utf-8",
    )
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    with_type(status, full(body), "application/json")
}

pub fn with_type(
    status: StatusCode,
    body: ResponseBody,
    content_type: &'static str,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn readiness(gateway: &Gateway) -> Response<ResponseBody> {
    if gateway.is_ready() {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
