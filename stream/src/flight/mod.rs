//! Arrow Flight SQL over every data version and every prediction (`driftwood flight`).
//!
//! ```text
//!  ADBC / JDBC / pyarrow ──gRPC(TLS)──► FlightSqlService ──► DataFusion SessionContext
//!       handshake (Basic) → JWT              │ authorize (viewer)   catalog `driftwood`
//!       bearer token on every call            │                      schema per dataset
//!                                             └─ DoGet streams batches ◄─ Parquet objects
//! ```
//!
//! * Naming: see [`catalog`] — `<dataset>.latest`, `<dataset>.v<seq>`, `<dataset>.<tag>`,
//!   `<dataset>."<version id>"`, `<dataset>.versions`; the default schema is
//!   `snapshot.dataset`, so `SELECT count(*) FROM latest` works.
//! * Statements are stateless: the ticket carries the SQL, so any replica can serve the DoGet.
//!   Prepared statements live in this server (bounded; the oldest is closed first); `?`
//!   placeholders are accepted as well as `$1`.
//! * Every call but the handshake needs a bearer token with role `viewer` or higher; all
//!   errors become gRPC codes in [`status`].

pub mod cache;
pub mod catalog;
mod doget;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable, SqlInfo,
    SqlNullOrdering, SqlSupportedTransaction, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::{Stream, TryStreamExt};
use prost::Message;
use schemas::auth::{AuthError, Authenticator, Principal, Role};
use schemas::config::TlsConfig;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::store::SnapshotStore;
use cache::VersionCache;
use catalog::{CATALOG, Pins, StoreCatalog};

/// Why a Flight SQL call failed; [`status`] maps each to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed (bad handle, bad parameters, bad credentials header).
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Planning or running the query failed.
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Flight(#[from] FlightError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The one place errors become gRPC statuses.
pub fn status(e: Error) -> Status {
    match e {
        Error::Auth(AuthError::Unauthenticated(m)) => Status::unauthenticated(m),
        Error::Auth(AuthError::Forbidden(m)) => Status::permission_denied(m),
        Error::Auth(AuthError::Unavailable(m)) => Status::unavailable(m),
        Error::BadRequest(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Query(e) => query_status(e),
        Error::Arrow(e) => Status::internal(format!("Arrow error: {e}")),
        Error::Flight(e) => Status::internal(format!("Flight error: {e}")),
        Error::Internal(m) => Status::internal(m),
    }
}

fn query_status(e: DataFusionError) -> Status {
    let message = e.to_string();
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(message)
        }
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        DataFusionError::Configuration(_) => Status::failed_precondition(message),
        _ => Status::internal(message),
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;
type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A prepared statement: its SQL and the parameters bound last.
#[derive(Debug, Clone)]
struct Prepared {
    sql: String,
    /// Parameter types inferred when it was prepared, `$1` first.
    param_types: Vec<Option<DataType>>,
    params: Option<Vec<ScalarValue>>,
    /// Who created it: only they may use it.
    owner: String,
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
        let config = catalog::plain_strings(
            SessionConfig::new()
                .with_default_catalog_and_schema(CATALOG, &self.inner.default_dataset)
                .with_information_schema(true)
                .with_create_default_catalog_and_schema(false),
        );
        let ctx = catalog::session_context(&self.inner.store, config);
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

    fn authorize<T>(&self, request: &Request<T>) -> Result<Principal> {
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

    fn prepared(&self, handle: &[u8], who: &Principal) -> Result<Prepared> {
        let handle = std::str::from_utf8(handle)
            .map_err(|_| Error::BadRequest("malformed statement handle".into()))?;
        let map =
            self.inner.prepared.lock().map_err(|_| Error::Internal("prepared statements poisoned".into()))?;
        match map.map.get(handle) {
            Some(p) if p.owner == who.subject => Ok(p.clone()),
            _ => {
                Err(Error::NotFound(format!("prepared statement `{handle}` (closed, expired or not yours)")))
            }
        }
    }

    /// FlightInfo of a query: its schema and one endpoint whose ticket names the query and the
    /// versions it was planned on. (One endpoint per plan partition was measured on this
    /// 2-core machine: no faster for ADBC or the Rust client, so results come as one stream.)
    async fn describe_query(
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
    async fn statement_batches(
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
    fn flight_data(schema: SchemaRef, batches: SendableRecordBatchStream) -> FlightStream<FlightData> {
        let batches = batches.map_err(|e| FlightError::ExternalError(Box::new(e)));
        let stream =
            FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                FlightError::ExternalError(e) => match e.downcast::<DataFusionError>() {
                    Ok(e) => query_status(*e),
                    Err(e) => Status::internal(e.to_string()),
                },
                e => Status::internal(e.to_string()),
            });
        Box::pin(stream)
    }

    fn info(&self, schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<FlightInfo> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        Ok(FlightInfo::new().try_with_schema(schema)?.with_endpoint(endpoint).with_descriptor(descriptor))
    }

    /// GetFlightInfo of a metadata command: authorized; the ticket is the command itself.
    fn describe(
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
    fn reply(
        batch: Result<RecordBatch, impl Into<Error>>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        Ok(Response::new(Self::batch_stream(batch.map_err(|e| status(e.into()))?)))
    }

    fn batch_stream(batch: RecordBatch) -> FlightStream<FlightData> {
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
struct QueryTicket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
    /// Handle of a prepared statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prepared: Option<String>,
    /// `(dataset, table name, version id)`.
    #[serde(default)]
    pins: Vec<(String, String, String)>,
}

fn new_pins() -> Pins {
    Pins::default()
}

/// `?` placeholders (ODBC/JDBC/ADBC style) become `$1`, `$2`, ... (DataFusion's); string
/// literals and comments are left alone because the SQL tokenizer is used.
pub fn positional_placeholders(sql: &str) -> String {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return sql.to_string();
    };
    if !tokens.iter().any(|t| matches!(t, Token::Placeholder(p) if p == "?")) {
        return sql.to_string();
    }
    let mut n = 0;
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                format!("${n}")
            }
            t => t.to_string(),
        })
        .collect()
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Driftwood");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierCase, 1i32); // case-insensitive (lower-cased)
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, 3i32); // case-sensitive
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSchemaTerm, "dataset");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().expect("static SQL info builds")
}

fn xdbc_types() -> XdbcTypeInfoData {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'"), Searchable::Full, None),
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, Searchable::Basic, None),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(32), None, Searchable::Basic, Some(false)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(64), None, Searchable::Basic, Some(false)),
        ("REAL", XdbcDataType::XdbcReal, Some(24), None, Searchable::Basic, Some(false)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), None, Searchable::Basic, Some(false)),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, Some("'"), Searchable::Basic, None),
    ];
    for (name, data_type, size, quote, searchable, unsigned) in types {
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: size,
            literal_prefix: quote.map(String::from),
            literal_suffix: quote.map(String::from),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: name == "VARCHAR",
            searchable,
            unsigned_attribute: unsigned,
            fixed_prec_scale: false,
            auto_increment: None,
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: size.map(|_| 2),
            interval_precision: None,
        });
    }
    b.build().expect("static type info builds")
}

/// Parameters of one DoPut: the first row of the bound batch, cast to the types the plan
/// inferred (so a client binding an int64 to a `label = ?` still works).
fn bind_row(batch: &RecordBatch, expected: &[Option<DataType>]) -> Result<Vec<ScalarValue>> {
    if batch.num_rows() == 0 {
        return Err(Error::BadRequest("no parameter values were bound".into()));
    }
    if batch.num_rows() > 1 {
        return Err(Error::BadRequest(format!(
            "{} parameter rows were bound; queries take one row of parameters",
            batch.num_rows()
        )));
    }
    if batch.num_columns() != expected.len() {
        return Err(Error::BadRequest(format!(
            "the statement has {} parameters, {} were bound",
            expected.len(),
            batch.num_columns()
        )));
    }
    batch
        .columns()
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (col, want))| {
            let col = match want {
                Some(t) if t != col.data_type() => arrow::compute::cast(col, t).map_err(|e| {
                    Error::BadRequest(format!("parameter {} ({}) cannot be {t}: {e}", i + 1, col.data_type()))
                })?,
                _ => col.clone(),
            };
            Ok(ScalarValue::try_from_array(&col, 0)?)
        })
        .collect()
}

/// Parameter types of a planned statement, `$1` first.
fn parameter_types(df: &DataFrame) -> Result<Vec<Option<DataType>>> {
    let types = df.logical_plan().get_parameter_types()?;
    let mut out = Vec::with_capacity(types.len());
    for i in 1..=types.len() {
        let t = types
            .get(&format!("${i}"))
            .ok_or_else(|| Error::BadRequest(format!("parameters must be numbered $1..${}", types.len())))?;
        out.push(t.clone());
    }
    Ok(out)
}

fn decode_basic(header: &str) -> Result<(String, String)> {
    let encoded = header.strip_prefix("Basic ").ok_or_else(|| {
        AuthError::Unauthenticated("the handshake needs `authorization: Basic <base64 user:password>`".into())
    })?;
    // Padded or not: Go clients (the ADBC driver) send unpadded base64.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(encoded.trim())
        .map_err(|_| AuthError::Unauthenticated("basic credentials are not base64".into()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| AuthError::Unauthenticated("basic credentials are not UTF-8".into()))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| AuthError::Unauthenticated("basic credentials are not user:password".into()))?;
    Ok((user.to_string(), password.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<FlightStream<HandshakeResponse>>, Status> {
        let header =
            request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        let auth = self.inner.auth.clone();
        if !auth.enabled() {
            let out = futures::stream::iter(vec![Ok(HandshakeResponse {
                protocol_version: 0,
                payload: Default::default(),
            })]);
            return Ok(Response::new(Box::pin(out)));
        }
        let header = header.ok_or_else(|| {
            status(AuthError::Unauthenticated("the handshake needs basic credentials".into()).into())
        })?;
        let (user, password) = decode_basic(&header).map_err(status)?;
        // argon2 is deliberately slow: off the async workers.
        let issued = tokio::task::spawn_blocking(move || auth.login(&user, &password))
            .await
            .map_err(|e| Status::internal(format!("login task failed: {e}")))?
            .map_err(|e| status(e.into()))?;
        let bearer = MetadataValue::try_from(format!("Bearer {}", issued.token))
            .map_err(|_| Status::internal("token is not a header value"))?;
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: issued.token.into_bytes().into(),
        })]);
        let mut response: Response<FlightStream<HandshakeResponse>> = Response::new(Box::pin(out));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request).map_err(status)?;
        let pins = new_pins();
        let df = self.plan(&query.query, None, pins.clone()).await.map_err(status)?;
        let ticket = QueryTicket { sql: Some(query.query), ..Default::default() };
        let info = self.describe_query(df, &pins, request.into_inner(), ticket).await.map_err(status)?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (schema, batches) = self.statement_batches(ticket, &request).await?;
        Ok(Response::new(Self::flight_data(schema, batches)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let who = self.authorize(&request).map_err(status)?;
        let df = self.plan(&query.query, None, new_pins()).await.map_err(status)?;
        let params = parameter_types(&df).map_err(status)?;
        let dataset_schema = df.schema().as_arrow().clone();
        let parameter_schema = Schema::new(
            params
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("${}", i + 1), t.clone().unwrap_or(DataType::Utf8), true))
                .collect::<Vec<_>>(),
        );
        let handle = format!("{:032x}", rand_handle());
        {
            let mut map =
                self.inner.prepared.lock().map_err(|_| Status::internal("prepared statements poisoned"))?;
            while map.map.len() >= self.inner.max_prepared {
                let Some(old) = map.order.pop_front() else { break };
                map.map.remove(&old);
            }
            map.order.push_back(handle.clone());
            map.map.insert(
                handle.clone(),
                Prepared { sql: query.query, param_types: params, params: None, owner: who.subject },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: ipc_schema(&dataset_schema).map_err(status)?,
            parameter_schema: ipc_schema(&parameter_schema).map_err(status)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = self.authorize(&request).map_err(status)?;
        let prepared = self.prepared(&query.prepared_statement_handle, &who).map_err(status)?;
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            // into_peekable keeps the schema message the router peeked at.
            request.into_inner().into_peekable().map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| status(Error::BadRequest(format!("cannot read the bound parameters: {e}"))))?;
        let batch = match batches.as_slice() {
            [b] => b.clone(),
            [] => return Err(status(Error::BadRequest("no parameter values were bound".into()))),
            _ => arrow::compute::concat_batches(&batches[0].schema(), &batches)
                .map_err(|e| status(e.into()))?,
        };
        let params = bind_row(&batch, &prepared.param_types).map_err(status)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        let mut map =
            self.inner.prepared.lock().map_err(|_| Status::internal("prepared statements poisoned"))?;
        if let Some(p) = map.map.get_mut(&handle) {
            p.params = Some(params);
        }
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.authorize(&request).map_err(status)?;
        let prepared = self.prepared(&cmd.prepared_statement_handle, &who).map_err(status)?;
        let pins = new_pins();
        let df = self.plan(&prepared.sql, prepared.params, pins.clone()).await.map_err(status)?;
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).to_string();
        let ticket = QueryTicket { prepared: Some(handle), ..Default::default() };
        let info = self.describe_query(df, &pins, request.into_inner(), ticket).await.map_err(status)?;
        Ok(Response::new(info))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let who = self.authorize(&request).map_err(status)?;
        self.prepared(&query.prepared_statement_handle, &who).map_err(status)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        let mut map =
            self.inner.prepared.lock().map_err(|_| Status::internal("prepared statements poisoned"))?;
        map.map.remove(&handle);
        map.order.retain(|h| *h != handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request).map_err(status)?;
        let mut b = query.into_builder();
        b.append(CATALOG);
        Self::reply(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request).map_err(status)?;
        let mut b = query.into_builder();
        for dataset in self.inner.store.datasets().map_err(|e| status(Error::Internal(e.to_string())))? {
            b.append(CATALOG, dataset);
        }
        Self::reply(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request).map_err(status)?;
        let wants_type = query.table_types.is_empty() || query.table_types.iter().any(|t| t == "TABLE");
        let mut b = query.into_builder();
        let store = &self.inner.store;
        let datasets = if wants_type { store.datasets() } else { Ok(Vec::new()) };
        for dataset in datasets.map_err(|e| status(Error::Internal(e.to_string())))? {
            let tables = catalog::table_schemas(store, &dataset)
                .map_err(|e| status(Error::Internal(e.to_string())))?;
            for (table, schema) in tables {
                b.append(CATALOG, &dataset, &table, "TABLE", &schema).map_err(|e| status(e.into()))?;
            }
        }
        Self::reply(b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request).map_err(status)?;
        let mut b = query.into_builder();
        b.append("TABLE");
        Self::reply(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.inner.sql_info).schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request).map_err(status)?;
        Self::reply(query.into_builder(&self.inner.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.inner.xdbc).schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request).map_err(status)?;
        Self::reply(query.into_builder(&self.inner.xdbc).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A random 128-bit statement handle.
fn rand_handle() -> u128 {
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

/// Serves Flight SQL on `addr` (TLS when configured) until `cancel`.
pub async fn serve(
    addr: std::net::SocketAddr,
    tls: TlsConfig,
    service: FlightSql,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let mut builder = Server::builder();
    if tls.enabled() {
        let read = |path: &str| {
            std::fs::read(path).map_err(|source| crate::Error::Io { path: path.to_string(), source })
        };
        let identity = Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| crate::Error::Spec(format!("TLS set-up of the Flight SQL server: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Io { path: format!("Flight SQL listen address {addr}"), source })?;
    tracing::info!(%addr, tls = tls.enabled(), "Flight SQL server listening");
    let incoming = futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    });
    builder
        .add_service(doget::Router::new(service, 64 << 20))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
        .map_err(|e| crate::Error::Internal(format!("Flight SQL server: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders_outside_literals() {
        assert_eq!(
            positional_placeholders("SELECT '?' AS q, id FROM t WHERE label = ? AND n > ?"),
            "SELECT '?' AS q, id FROM t WHERE label = $1 AND n > $2"
        );
        assert_eq!(positional_placeholders("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn every_error_maps_to_its_grpc_code() {
        use tonic::Code;
        let cases = [
            (Error::Auth(AuthError::Unauthenticated("x".into())), Code::Unauthenticated),
            (Error::Auth(AuthError::Forbidden("x".into())), Code::PermissionDenied),
            (Error::Auth(AuthError::Unavailable("x".into())), Code::Unavailable),
            (Error::BadRequest("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::Query(DataFusionError::Plan("no table".into())), Code::InvalidArgument),
            (Error::Query(DataFusionError::NotImplemented("x".into())), Code::Unimplemented),
            (Error::Query(DataFusionError::Execution("x".into())), Code::Internal),
            (Error::Internal("x".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            assert_eq!(status(e).code(), code, "{text}");
        }
    }

    #[test]
    fn basic_credentials_decode_padded_or_not() {
        assert_eq!(decode_basic("Basic YW5hOnM6Mw==").unwrap(), ("ana".to_string(), "s:3".to_string()));
        assert_eq!(decode_basic("Basic YW5hOnM6Mw").unwrap(), ("ana".to_string(), "s:3".to_string()));
        assert!(matches!(decode_basic("Bearer x"), Err(Error::Auth(AuthError::Unauthenticated(_)))));
        assert!(matches!(decode_basic("Basic !!"), Err(Error::Auth(AuthError::Unauthenticated(_)))));
    }

    #[test]
    fn bound_parameters_are_cast_to_the_inferred_types() {
        use arrow::array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![7])), Arc::new(StringArray::from(vec!["spam"]))],
        )
        .unwrap();
        let got = bind_row(&batch, &[Some(DataType::Utf8), None]).unwrap();
        assert_eq!(got, vec![ScalarValue::Utf8(Some("7".into())), ScalarValue::Utf8(Some("spam".into()))]);
        assert!(bind_row(&batch, &[None]).unwrap_err().to_string().contains("1 parameters, 2 were bound"));
    }
}
