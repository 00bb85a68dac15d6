//! `ServiceDiscoveryGrpc` in process: the first byte picks `DiscoverServices` or
//! `DiscoverTopServices`, the rest is the request message as sent on the wire.
//!
//! Properties: no panic; a message that decodes is answered OK or INVALID_ARGUMENT, never
//! anything else; every location answered belongs to the scope and service asked for.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quaestor_core::proto::service_discovery::{DiscoverServicesRequest, DiscoverServicesResponse};
use quaestor_fuzz::{Fixture, call, grpc_frames, runtime};
use tonic::Code;

const PATHS: [&str; 2] = [
    "/Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc/DiscoverServices",
    "/Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc/DiscoverTopServices",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let fixture = Fixture::shared();
    let path = PATHS[usize::from(which & 1)];
    let outcome = runtime().block_on(call(
        fixture.balancer.discovery_service(),
        path,
        grpc_frames([message]),
        1,
        Duration::from_secs(5),
    ));
    let Ok(request) = DiscoverServicesRequest::decode(message) else {
        return;
    };
    match outcome.status {
        None | Some(Code::Ok) => {
            assert_eq!(outcome.messages.len(), 1, "{outcome:?}");
            let response = DiscoverServicesResponse::decode(outcome.messages[0].clone())
                .expect("a response that decodes");
            for location in response.service_locations {
                assert_eq!(location.scope, request.scope);
                assert_eq!(location.service_name, request.service_name);
                assert!(location.port > 0 && location.port <= 65535);
            }
        }
        Some(Code::InvalidArgument) => {}
        Some(other) => panic!("{request:?} answered {other:?}: {}", outcome.message),
    }
});
