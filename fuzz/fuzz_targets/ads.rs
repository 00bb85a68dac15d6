//! `envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources` in
//! process: the input is a sequence of length-prefixed `DiscoveryRequest` messages (see
//! `quaestor_fuzz::length_prefixed`) on one stream; at most 16 responses are read.
//!
//! Properties: no panic; when every message decodes, the stream ends OK or
//! INVALID_ARGUMENT or is still open, never with another status; every response is of a
//! served type, has a nonce, and holds only resources of its type.
#![no_main]

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use quaestor_core::balancer::xds::{
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, XdsService,
};
use quaestor_fuzz::{Fixture, call, grpc_frames, length_prefixed, runtime};
use tonic::Code;

const PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

fuzz_target!(|data: &[u8]| {
    let messages = length_prefixed(data);
    let fixture = Fixture::shared();
    let service = XdsService::new(fixture.balancer.clone(), fixture.health.clone());
    let outcome = runtime().block_on(call(
        service.into_server(),
        PATH,
        grpc_frames(messages.iter().copied()),
        16,
        Duration::from_millis(200),
    ));
    if !messages
        .iter()
        .all(|m| DiscoveryRequest::decode(*m).is_ok())
    {
        return;
    }
    match outcome.status {
        None | Some(Code::Ok) | Some(Code::InvalidArgument) => {}
        Some(other) => panic!("{messages:?} answered {other:?}: {}", outcome.message),
    }
    for message in &outcome.messages {
        let response = DiscoveryResponse::decode(message.clone()).expect("a response");
        assert!(
            [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE]
                .contains(&response.type_url.as_str()),
            "{response:?}"
        );
        assert!(!response.nonce.is_empty());
        for resource in &response.resources {
            assert_eq!(resource.type_url, response.type_url);
        }
    }
});
