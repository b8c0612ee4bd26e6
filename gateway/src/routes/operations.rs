//! `/v1/operations/{id}`: the state of a write, answerable by any replica.

use std::convert::Infallible;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Shared, context, json, respond, with};
use crate::context::RequestContext;

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "operations" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state))
        .and_then(get)
        .boxed()
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Infallible> {
    respond(
        state
            .dispatcher
            .operation(&id, &context)
            .await
            .map(|view| json(StatusCode::OK, &view)),
    )
}
