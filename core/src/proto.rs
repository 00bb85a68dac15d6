//! Generated protocol types. Package and field numbers follow DESIGN.md exactly.

/// `package Quaestor.LoadReporting`: the load report every worker serves.
pub mod load_reporting {
    tonic::include_proto!("quaestor.load_reporting");
}

/// `package Quaestor.ServiceDiscovery`: the balancer's discovery API.
pub mod service_discovery {
    tonic::include_proto!("quaestor.service_discovery");
}

/// `package Quaestor.ProcessAdministration`: cancelling running requests, served by reporters.
pub mod process_admin {
    tonic::include_proto!("quaestor.process_administration");
}

/// `package quaestor.push.v1`: quaestor's own load push (reporter → balancer).
pub mod push {
    tonic::include_proto!("quaestor.push.v1");
}

/// `package quaestor.example`: the demo Work service of the reference worker.
pub mod example {
    tonic::include_proto!("quaestor.example");
}

/// `package grpc.lb.v1`: the standard grpclb protocol.
pub mod grpclb {
    tonic::include_proto!("grpc.lb.v1");
}

/// `package xds.data.orca.v3` and `xds.service.orca.v3`: ORCA load reports (gRFC A51), nested
/// as their packages are (the generated code refers across them by relative paths).
pub mod xds {
    pub mod data {
        pub mod orca {
            pub mod v3 {
                tonic::include_proto!("xds.data.orca.v3");
            }
        }
    }
    pub mod service {
        pub mod orca {
            pub mod v3 {
                tonic::include_proto!("xds.service.orca.v3");
            }
        }
    }
}

/// The standard `grpc.health.v1` types (from tonic-health).
pub use tonic_health::pb as health;

/// The encoded `FileDescriptorSet` of quaestor's own protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/quaestor_descriptor.bin"));
