//! The gRPC control plane, served on the HTTP port: `prism.control.RoomService`, the gRPC
//! health service and server reflection. Requests whose content-type is `application/grpc*`
//! go here, everything else to the HTTP routes ([`dispatch`]).

mod auth;
mod service;
mod status;
mod trace;
mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use prism_proto::auth::TokenVerifier;
use prism_proto::control::room_service_server::RoomServiceServer;
use tower::Service;

use crate::room::RoomManager;

/// The gRPC services as an axum router.
pub async fn router(rooms: Arc<RoomManager>, verifier: Arc<TokenVerifier>) -> Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Serving for as long as the server runs; the reporter's state lives in the service.
    health
        .set_serving::<RoomServiceServer<service::RoomServiceImpl>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(prism_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(prism_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let mut routes =
        tonic::service::Routes::new(RoomServiceServer::new(service::RoomServiceImpl {
            rooms,
            verifier,
        }))
        .add_service(health_service);
    if let Ok(v1) = reflection_v1 {
        routes = routes.add_service(v1);
    } else {
        tracing::error!("gRPC reflection (v1) unavailable: bad descriptor set");
    }
    if let Ok(v1alpha) = reflection_v1alpha {
        routes = routes.add_service(v1alpha);
    }
    routes
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn(trace::span))
}

/// Sends gRPC requests to `grpc` and the rest to `http`, on one listener.
pub fn dispatch(http: Router, grpc: Router) -> Router {
    Router::new().fallback_service(Dispatch { http, grpc })
}

#[derive(Clone)]
struct Dispatch {
    http: Router,
    grpc: Router,
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl Service<Request<Body>> for Dispatch {
    type Response = <Router as Service<Request<Body>>>::Response;
    type Error = Infallible;
    type Future = <Router as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if is_grpc(&request) {
            self.grpc.call(request)
        } else {
            self.http.call(request)
        }
    }
}
