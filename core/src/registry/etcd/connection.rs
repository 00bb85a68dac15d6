//! A connection to an etcd cluster that moves to another member when the one in use fails.
//!
//! The etcd-client crate does not do this itself: a request can keep going to a dead member.
//! Here one member is used at a time; a request that fails for a reason another member might
//! not have (transport error, timeout, no leader) marks that member failed, and the request is
//! retried on the next one, round robin, within a bounded number of rounds.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::Mutex;
use tonic::Code;

use super::{EtcdError, EtcdOptions};
use crate::backoff::Backoff;

/// How many times a request goes round all members before it fails.
const ROUNDS: usize = 3;

#[derive(Debug)]
pub(crate) struct Connection {
    options: EtcdOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The member to try first next time.
    next: usize,
    /// The member in use and its client.
    current: Option<(usize, Client)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("next", &self.next)
            .field("current", &self.current.as_ref().map(|(index, _)| index))
            .finish()
    }
}

/// A client bound to one member; hand it back to [`Connection::failed`] when it fails.
#[derive(Clone)]
pub(crate) struct Member {
    pub index: usize,
    pub client: Client,
}

impl Connection {
    pub fn new(options: EtcdOptions) -> Result<Self, EtcdError> {
        if options.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        Ok(Connection {
            options,
            state: Mutex::new(State::default()),
        })
    }

    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// The member in use, connecting to the next reachable one if there is none.
    pub async fn member(&self) -> Result<Member, EtcdError> {
        let mut state = self.state.lock().await;
        if let Some((index, client)) = &state.current {
            return Ok(Member {
                index: *index,
                client: client.clone(),
            });
        }
        let count = self.options.endpoints.len();
        let mut last_error = None;
        for attempt in 0..count {
            let index = (state.next + attempt) % count;
            match self.connect(index).await {
                Ok(client) => {
                    state.current = Some((index, client.clone()));
                    state.next = index;
                    return Ok(Member { index, client });
                }
                // Every member has the same users: no point asking the others.
                Err(error @ EtcdError::Refused { .. }) => return Err(error),
                Err(error) => {
                    tracing::debug!(endpoint = %self.options.endpoints[index], %error, "etcd member unreachable");
                    last_error = Some(error);
                }
            }
        }
        state.next = (state.next + 1) % count;
        Err(EtcdError::Unreachable {
            endpoints: self.options.endpoints.join(","),
            reason: last_error.map_or_else(String::new, |e| e.reason()),
        })
    }

    /// Stops using `member` (if it is still the one in use): the next request goes elsewhere.
    pub async fn failed(&self, member: &Member) {
        let mut state = self.state.lock().await;
        if matches!(&state.current, Some((index, _)) if *index == member.index) {
            tracing::info!(endpoint = %self.options.endpoints[member.index], "leaving etcd member");
            state.current = None;
            state.next = (member.index + 1) % self.options.endpoints.len();
        }
    }

    /// Runs `request` against the member in use, moving to other members on failures that
    /// another member might not have. Each attempt is bounded by the request timeout.
    pub async fn call<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = ROUNDS * self.options.endpoints.len();
        let mut last = None;
        for attempt in 0..attempts {
            let member = match self.member().await {
                Ok(member) => member,
                Err(error @ EtcdError::Refused { .. }) => return Err(error),
                Err(error) => {
                    last = Some(error);
                    backoff(attempt).await;
                    continue;
                }
            };
            match tokio::time::timeout(self.options.request_timeout, request(member.client.clone()))
                .await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if refusal(&error, what, self.user()).is_some() => {
                    return Err(self.refused(&error, what));
                }
                Ok(Err(error)) if !worth_another_member(&error) => {
                    return Err(EtcdError::Request {
                        what: what.to_owned(),
                        source: error,
                    });
                }
                Ok(Err(error)) => {
                    tracing::debug!(what, endpoint = %self.options.endpoints[member.index], %error, "etcd request failed; trying another member");
                    last = Some(EtcdError::Request {
                        what: what.to_owned(),
                        source: error,
                    });
                }
                Err(_) => {
                    tracing::debug!(what, endpoint = %self.options.endpoints[member.index], "etcd request timed out; trying another member");
                    last = Some(EtcdError::Timeout {
                        what: what.to_owned(),
                        after: self.options.request_timeout,
                    });
                }
            }
            self.failed(&member).await;
            if (attempt + 1) % self.options.endpoints.len() == 0 {
                backoff(attempt).await;
            }
        }
        Err(last.unwrap_or(EtcdError::NoEndpoints))
    }

    async fn connect(&self, index: usize) -> Result<Client, EtcdError> {
        let endpoint = &self.options.endpoints[index];
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.options.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), self.options.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the others answers "no leader" instead of stale data.
            .with_require_leader(true);
        if let Some(tls) = &self.options.tls {
            options = options.with_tls(tls.load()?);
        }
        if let Some((user, password)) = &self.options.user {
            options = options.with_user(user.clone(), password.clone());
        }
        let connect = async {
            let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
            // Connecting is lazy; ask something to know the member answers.
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match tokio::time::timeout(
            self.options.connect_timeout + self.options.request_timeout,
            connect,
        )
        .await
        {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) if refusal(&source, "connect", self.user()).is_some() => {
                Err(self.refused(&source, "connect"))
            }
            Ok(Err(source)) => Err(EtcdError::Request {
                what: format!("connect to {endpoint}"),
                source,
            }),
            Err(_) => Err(EtcdError::Timeout {
                what: format!("connect to {endpoint}"),
                after: self.options.connect_timeout + self.options.request_timeout,
            }),
        }
    }
}

impl Connection {
    /// `error` (a refusal, see [`refusal`]) as the error callers see.
    fn refused(&self, error: &etcd_client::Error, what: &str) -> EtcdError {
        EtcdError::Refused {
            user: self.options.user.as_ref().map(|(user, _)| user.clone()),
            reason: refusal(error, what, self.user()).unwrap_or_default(),
        }
    }

    fn user(&self) -> Option<&str> {
        self.options.user.as_ref().map(|(user, _)| user.as_str())
    }
}

/// Why etcd refused the client, when `error` is such a refusal (credentials or permissions),
/// worded for an operator; `None` for every other failure.
fn refusal(error: &etcd_client::Error, what: &str, user: Option<&str>) -> Option<String> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    let message = status.message();
    if message.contains("authentication failed") {
        Some("authentication failed (wrong user name or password)".to_owned())
    } else if message.contains("permission denied") && user.is_none() {
        Some(format!(
            "permission denied for {what}: authentication is on; give a user name and password"
        ))
    } else if message.contains("permission denied") {
        Some(format!(
            "permission denied for {what} (its roles must grant readwrite on the prefix services/)"
        ))
    } else if message.contains("user name is empty") {
        Some("authentication is on; give a user name and password".to_owned())
    } else if message.contains("authentication is not enabled") {
        Some("authentication is not enabled on this etcd; give no user".to_owned())
    } else if status.code() == Code::Unauthenticated {
        Some(format!("not authenticated ({message})"))
    } else {
        None
    }
}

/// Failures that are about the member, not the request.
fn worth_another_member(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => !matches!(
            status.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
        ),
        etcd_client::Error::InvalidArgs(_)
        | etcd_client::Error::InvalidUri(_)
        | etcd_client::Error::Utf8Error(_) => false,
        _ => true,
    }
}

/// How etcd is retried: 50 ms doubling up to 2 s, ± 50 %.
const BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).with_jitter(0.5);

/// Waits before retry `attempt` (0: the first retry).
pub(crate) async fn backoff(attempt: usize) {
    tokio::time::sleep(backoff_delay(attempt)).await;
}

pub(crate) fn backoff_delay(attempt: usize) -> Duration {
    BACKOFF.jittered(u32::try_from(attempt).unwrap_or(u32::MAX).saturating_add(1))
}
