//! A registry held in memory: the configuration's Worker agents (the C# load balancer's
//! fallback when there is no etcd), or whatever one process registers in it.

use super::{Publisher, RegistryReader, ServiceLocation};

/// Cheap to clone; clones share the locations.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    publisher: Publisher,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding `locations`.
    pub fn from_locations(locations: impl IntoIterator<Item = ServiceLocation>) -> Self {
        let registry = Self::new();
        registry
            .publisher
            .replace(locations.into_iter().map(|l| (l.key(), l)).collect(), false);
        registry
    }

    pub fn register(&self, location: ServiceLocation) {
        self.publisher.insert(location);
    }

    pub fn deregister(&self, location: &ServiceLocation) {
        self.publisher.remove(&location.key());
    }
}

impl RegistryReader for MemoryRegistry {
    fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_and_deregister_reach_followers() {
        let a = ServiceLocation::new("", "Worker", "localhost", 5161).expect("valid");
        let b = ServiceLocation::new("", "Worker", "localhost", 5162).expect("valid");
        let registry = MemoryRegistry::from_locations([a.clone()]);
        let mut worker = registry.subscribe_service("", "Worker");
        assert_eq!(worker.borrow_and_update().locations, vec![a.clone()]);
        registry.register(b.clone());
        assert_eq!(
            worker.borrow_and_update().locations,
            vec![a.clone(), b.clone()]
        );
        registry.deregister(&a);
        assert_eq!(worker.borrow_and_update().locations, vec![b]);
        assert!(!registry.current().stale);
    }
}
