//! `/v1/operations/{id}`: the state of a write, answerable by any replica.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Shared, answer, context, json, with};
use crate::context::RequestContext;
use crate::problem::Problem;

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "operations" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state))
        .then(get)
        .map(answer)
        .boxed()
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let view = state.dispatcher.operation(&id, &context).await?;
    Ok(json(StatusCode::OK, &view))
}
