//! `grpc.lb.v1.LoadBalancer/BalanceLoad` in process: the input is a sequence of
//! length-prefixed `LoadBalanceRequest` messages (see `quaestor_fuzz::length_prefixed`), sent
//! as one request stream; at most 4 responses are read.
//!
//! Properties: no panic; when every message decodes, the stream ends OK, INVALID_ARGUMENT or
//! not at all (still open), never with another status; the first response is the initial
//! one, the others server lists of IPv4 or IPv6 addresses with ports.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quaestor_core::proto::grpclb::load_balance_response::LoadBalanceResponseType;
use quaestor_core::proto::grpclb::{LoadBalanceRequest, LoadBalanceResponse};
use quaestor_fuzz::{Fixture, call, grpc_frames, length_prefixed, runtime};
use tonic::Code;

const PATH: &str = "/grpc.lb.v1.LoadBalancer/BalanceLoad";

fuzz_target!(|data: &[u8]| {
    let messages = length_prefixed(data);
    let fixture = Fixture::shared();
    let outcome = runtime().block_on(call(
        fixture.balancer.grpclb_service(fixture.health.clone()),
        PATH,
        grpc_frames(messages.iter().copied()),
        4,
        Duration::from_millis(200),
    ));
    if !messages
        .iter()
        .all(|m| LoadBalanceRequest::decode(*m).is_ok())
    {
        return;
    }
    match outcome.status {
        None | Some(Code::Ok) | Some(Code::InvalidArgument) => {}
        Some(other) => panic!("{messages:?} answered {other:?}: {}", outcome.message),
    }
    for (n, message) in outcome.messages.iter().enumerate() {
        let response = LoadBalanceResponse::decode(message.clone()).expect("a response");
        match response.load_balance_response_type {
            Some(LoadBalanceResponseType::InitialResponse(_)) => assert_eq!(n, 0),
            Some(LoadBalanceResponseType::ServerList(list)) => {
                assert!(n > 0, "a list before the initial response");
                for server in list.servers {
                    assert!(matches!(server.ip_address.len(), 4 | 16), "{server:?}");
                    assert!(server.port > 0 && server.port <= 65535, "{server:?}");
                }
            }
            other => panic!("an unexpected response {other:?}"),
        }
    }
});
