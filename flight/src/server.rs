//! The Flight SQL service's state and its steps: sessions over the store's catalog, the
//! bearer-token check, prepared statements (bounded, owned by who made them), planning and
//! running queries, and the FlightInfo/FlightData they answer with.
//!
//! The protocol's methods are in `service`; this module knows nothing of which method calls it.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::{Stream, TryStreamExt};
use prost::Message;
use schemas::auth::{AuthError, Authenticator, Principal, Role};
use stream::query::{plain_strings, session_context};
use stream::store::SnapshotStore;
use tonic::{Request, Response, Status};

use crate::cache::VersionCache;
use crate::catalog::{CATALOG, Pins, StoreCatalog};
use crate::error::{Error, Result, status};
use crate::sql::{positional_placeholders, sql_info, xdbc_types};

pub(crate) type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A prepared statement: its SQL and the parameters bound last.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) sql: String,
    /// Parameter types inferred when it was prepared, `$1` first.
    pub(crate) param_types: Vec<Option<DataType>>,
    pub(crate) params: Option<Vec<ScalarValue>>,
    /// Who created it: only they may use it.
    pub(crate) owner: String,
}

#[derive(Debug, Default)]
struct PreparedStatements {
    order: VecDeque<String>,
    map: HashMap<String, Prepared>,
}

/// The Flight SQL service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FlightSql {
    inner: Arc<Inner>,
}

struct Inner {
    store: SnapshotStore,
    default_dataset: String,
    auth: Arc<dyn Authenticator>,
    prepared: Mutex<PreparedStatements>,
    max_prepared: usize,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
    cache: Arc<VersionCache>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql")
            .field("store", &self.store)
            .field("default_dataset", &self.default_dataset)
            .field("max_prepared", &self.max_prepared)
            .finish_non_exhaustive()
    }
}

impl FlightSql {
    pub fn new(
        store: SnapshotStore,
        default_dataset: &str,
        auth: Arc<dyn Authenticator>,
        max_prepared: usize,
        cache_bytes: usize,
    ) -> FlightSql {
        FlightSql {
            inner: Arc::new(Inner {
                store,
                default_dataset: default_dataset.to_string(),
                auth,
                prepared: Mutex::new(PreparedStatements::default()),
                max_prepared: max_prepared.max(1),
                sql_info: sql_info(),
                xdbc: xdbc_types(),
                cache: Arc::new(VersionCache::new(cache_bytes)),
            }),
        }
    }

    /// A session seeing the store as it is now, apart from the table names in `pins` (which
    /// resolve to the pinned versions); it records what it resolves into `pins`.
    pub fn session(&self, pins: Pins) -> SessionContext {
        let config = plain_strings(
            SessionConfig::new()
                .with_default_catalog_and_schema(CATALOG, &self.inner.default_dataset)
                .with_information_schema(true)
                .with_create_default_catalog_and_schema(false),
        );
        let ctx = session_context(&self.inner.store, config);
        let catalog = StoreCatalog::new(self.inner.store.clone(), pins).with_cache(self.inner.cache.clone());
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        ctx
    }

    /// The decoded versions this server keeps in memory.
    pub fn cache(&self) -> &VersionCache {
        &self.inner.cache
    }

    /// Plans `sql` (with `params` bound, if any) as a DataFrame; see [`FlightSql::session`] for
    /// `pins`.
    pub async fn plan(&self, sql: &str, params: Option<Vec<ScalarValue>>, pins: Pins) -> Result<DataFrame> {
        let df = self.session(pins).sql(&positional_placeholders(sql)).await?;
        match params {
            Some(p) => Ok(df.with_param_values(ParamValues::from(p))?),
            None => Ok(df),
        }
    }

    pub(crate) fn authorize<T>(&self, request: &Request<T>) -> Result<Principal> {
        let token = match request.metadata().get("authorization") {
            None => None,
            Some(v) => {
                let v = v
                    .to_str()
                    .map_err(|_| AuthError::Unauthenticated("authorization header is not text".into()))?;
                let token =
                    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or_else(|| {
                        AuthError::Unauthenticated("expected `authorization: Bearer <token>`".into())
                    })?;
                Some(token.trim().to_string())
            }
        };
        Ok(self.inner.auth.authorize(token.as_deref(), Role::Viewer)?)
    }

    pub(crate) fn auth(&self) -> &Arc<dyn Authenticator> {
        &self.inner.auth
    }

    pub(crate) fn store(&self) -> &SnapshotStore {
        &self.inner.store
    }

    pub(crate) fn sql_info_data(&self) -> &SqlInfoData {
        &self.inner.sql_info
    }

    pub(crate) fn xdbc_data(&self) -> &XdbcTypeInfoData {
        &self.inner.xdbc
    }

    fn statements(&self) -> Result<std::sync::MutexGuard<'_, PreparedStatements>> {
        self.inner.prepared.lock().map_err(|_| Error::Internal("prepared statements poisoned".into()))
    }

    /// Keeps `p` under a new random handle, closing the oldest statements beyond the bound.
    pub(crate) fn add_prepared(&self, p: Prepared) -> Result<String> {
        let handle = format!("{:032x}", rand_handle());
        let mut map = self.statements()?;
        while map.map.len() >= self.inner.max_prepared {
            let Some(old) = map.order.pop_front() else { break };
            map.map.remove(&old);
        }
        map.order.push_back(handle.clone());
        map.map.insert(handle.clone(), p);
        Ok(handle)
    }

    /// Binds `params` to the statement `handle` (already checked to be the caller's).
    pub(crate) fn bind_prepared(&self, handle: &[u8], params: Vec<ScalarValue>) -> Result<()> {
        let handle = String::from_utf8_lossy(handle);
        if let Some(p) = self.statements()?.map.get_mut(handle.as_ref()) {
            p.params = Some(params);
        }
        Ok(())
    }

    /// Closes the statement `handle` (already checked to be the caller's).
    pub(crate) fn close_prepared(&self, handle: &[u8]) -> Result<()> {
        let handle = String::from_utf8_lossy(handle);
        let mut map = self.statements()?;
        map.map.remove(handle.as_ref());
        map.order.retain(|h| *h != handle);
        Ok(())
    }

    pub(crate) fn prepared(&self, handle: &[u8], who: &Principal) -> Result<Prepared> {
        let handle = std::str::from_utf8(handle)
            .map_err(|_| Error::BadRequest("malformed statement handle".into()))?;
        match self.statements()?.map.get(handle) {
            Some(p) if p.owner == who.subject => Ok(p.clone()),
            _ => {
                Err(Error::NotFound(format!("prepared statement `{handle}` (closed, expired or not yours)")))
            }
        }
    }

    /// FlightInfo of a query: its schema and one endpoint whose ticket names the query and the
    /// versions it was planned on. (One endpoint per plan partition was measured on this
    /// 2-core machine: no faster for ADBC or the Rust client, so results come as one stream.)
    pub(crate) async fn describe_query(
        &self,
        df: DataFrame,
        pins: &Pins,
        descriptor: FlightDescriptor,
        mut query: QueryTicket,
    ) -> Result<FlightInfo> {
        let schema = df.create_physical_plan().await?.schema();
        query.pins = pins
            .lock()
            .map_err(|_| Error::Internal("pins poisoned".into()))?
            .iter()
            .map(|((dataset, table), id)| (dataset.clone(), table.clone(), id.clone()))
            .collect();
        let handle = serde_json::to_vec(&query).map_err(|e| Error::Internal(e.to_string()))?;
        let ticket = TicketStatementQuery { statement_handle: handle.into() };
        self.info(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    /// Runs a planned query: its batches, in the physical plan's schema (the one
    /// [`FlightSql::describe_query`] advertised).
    async fn execute(&self, df: DataFrame) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        Ok((schema, datafusion::physical_plan::execute_stream(plan, task_ctx)?))
    }

    /// The result of a statement ticket, run for `request`'s principal.
    pub(crate) async fn statement_batches(
        &self,
        ticket: TicketStatementQuery,
        request: &Request<Ticket>,
    ) -> Result<(SchemaRef, SendableRecordBatchStream), Status> {
        let who = self.authorize(request).map_err(status)?;
        let ticket: QueryTicket = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|e| status(Error::BadRequest(format!("malformed ticket: {e}"))))?;
        let (sql, params) = match (ticket.sql, ticket.prepared) {
            (Some(sql), None) => (sql, None),
            (None, Some(handle)) => {
                let p = self.prepared(handle.as_bytes(), &who).map_err(status)?;
                (p.sql, p.params)
            }
            _ => return Err(status(Error::BadRequest("a ticket names one query".into()))),
        };
        let pins: Pins =
            Arc::new(std::sync::Mutex::new(ticket.pins.into_iter().map(|(d, t, id)| ((d, t), id)).collect()));
        let df = self.plan(&sql, params, pins).await.map_err(status)?;
        self.execute(df).await.map_err(status)
    }

    /// `batches` as FlightData by arrow-flight's encoder (which copies each body once; the
    /// server's DoGet uses [`doget`]'s encoder where it can).
    pub(crate) fn flight_data(
        schema: SchemaRef,
        batches: SendableRecordBatchStream,
    ) -> FlightStream<FlightData> {
        let batches = batches.map_err(|e| FlightError::ExternalError(Box::new(e)));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| status(Error::Flight(e)));
        Box::pin(stream)
    }

    fn info(&self, schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<FlightInfo> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        Ok(FlightInfo::new().try_with_schema(schema)?.with_endpoint(endpoint).with_descriptor(descriptor))
    }

    /// GetFlightInfo of a metadata command: authorized; the ticket is the command itself.
    pub(crate) fn describe(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: &impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request).map_err(status)?;
        let info =
            self.info(schema, command.as_any().encode_to_vec(), request.into_inner()).map_err(status)?;
        Ok(Response::new(info))
    }

    /// DoGet of a metadata command: one batch.
    pub(crate) fn reply(
        batch: Result<RecordBatch, impl Into<Error>>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        Ok(Response::new(Self::batch_stream(batch.map_err(|e| status(e.into()))?)))
    }

    pub(crate) fn batch_stream(batch: RecordBatch) -> FlightStream<FlightData> {
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Box::pin(stream)
    }
}

/// What a DoGet ticket names: a query or a prepared statement, and the versions its table
/// names resolved to when it was planned.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct QueryTicket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sql: Option<String>,
    /// Handle of a prepared statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prepared: Option<String>,
    /// `(dataset, table name, version id)`.
    #[serde(default)]
    pub(crate) pins: Vec<(String, String, String)>,
}

pub(crate) fn new_pins() -> Pins {
    Pins::default()
}

/// A random 128-bit statement handle.
pub(crate) fn rand_handle() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut out = 0u128;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(out);
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        );
        out = (out << 64) | u128::from(h.finish());
    }
    out
}
