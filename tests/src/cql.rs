//! [`CqlNode`]: an in-memory CQL v4 node (the `kassandra` crate) served on a loopback port, so
//! the ScyllaDB backend of the metadata store is tested through the real `scylla` driver over a
//! real connection. No ScyllaDB or Cassandra server can be installed on these machines.
//!
//! What kassandra executes: keyspace and table creation, INSERT / UPDATE (upsert) / DELETE,
//! SELECT with equality on key columns, LIMIT, prepared statements, batches and paging. What it
//! parses and then ignores: anything after the `WHERE` equalities (`IF` conditions of
//! lightweight transactions, so it returns no `[applied]` column), `USING TTL`, and table options.
//! What it lacks: aggregates, range predicates, replication, tombstones expiring.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use kassandra::KassandraSession;
use kassandra::error::DbError;
use kassandra::frame::request::Request;
use kassandra::frame::response::Response;
use kassandra::frame::response::error::Error as CqlError;
use kassandra::frame::{request_stream, response_sink};

/// A running node; it stops when dropped.
pub struct CqlNode {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CqlNode {
    /// Starts a node with an empty database on a free loopback port.
    pub fn start() -> Result<CqlNode> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cql-node".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener registers");
                    let db = std::rc::Rc::new(std::cell::RefCell::new(KassandraSession::new()));
                    tokio::select! {
                        _ = stopped => {}
                        _ = async {
                            loop {
                                let Ok((stream, _)) = listener.accept().await else { continue };
                                tokio::task::spawn_local(serve(stream, db.clone()));
                            }
                        } => {}
                    }
                });
            })
            .context("spawning the CQL node")?;
        Ok(CqlNode { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for CqlNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(mut stream: tokio::net::TcpStream, db: std::rc::Rc<std::cell::RefCell<KassandraSession>>) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut responses = response_sink(&mut write);
    while let Some(frame) = requests.next().await {
        let Ok((frame, opcode, data)) = frame else { break };
        let response = match Request::deserialize(opcode, &data, frame.flags) {
            Err(_) => Response::Error(CqlError::new(DbError::ProtocolError, "Error parsing request")),
            Ok(request) => {
                let mut db = db.borrow_mut();
                let result = match request {
                    Request::StartUp(_) | Request::Register { .. } => None,
                    Request::Options => Some(Ok(None)),
                    Request::Query(q) => Some(db.process(q).map(Some)),
                    Request::Prepare(p) => Some(db.prepare(p).map(Some)),
                    Request::Execute(e) => Some(db.execute(e).map(Some)),
                    Request::Batch(b) => Some(db.process_batch(b).map(Some)),
                    Request::AuthResponse => {
                        Some(Err(CqlError::new(DbError::ProtocolError, "authentication is not supported")))
                    }
                };
                match result {
                    None => Response::Ready,
                    Some(Ok(None)) => Response::options(),
                    Some(Ok(Some(r))) => Response::Result(r),
                    Some(Err(e)) => Response::Error(e),
                }
            }
        };
        if responses.send((response, frame.stream)).await.is_err() {
            break;
        }
    }
}
