//! The Flight SQL protocol: each `FlightSqlService` method authorizes, calls one step of
//! [`FlightSql`] and answers. Errors leave through [`crate::status`] only.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket};
use futures::TryStreamExt;
use schemas::auth::AuthError;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::CATALOG;
use crate::error::{Error, status};
use crate::server::{FlightSql, FlightStream, Prepared, QueryTicket, new_pins};
use crate::sql::{bind_row, decode_basic, ipc_schema, parameter_types};

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<FlightStream<HandshakeResponse>>, Status> {
        let header =
            request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        let auth = self.auth().clone();
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
        let (user, password) = decode_basic(&header)?;
        // argon2 is deliberately slow: off the async workers.
        let issued = tokio::task::spawn_blocking(move || auth.login(&user, &password))
            .await
            .map_err(|e| Error::Internal(format!("login task failed: {e}")))?
            .map_err(|e| status(e.into()))?;
        let bearer = MetadataValue::try_from(format!("Bearer {}", issued.token))
            .map_err(|_| Error::Internal("the token is not a header value".into()))?;
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
        self.authorize(&request)?;
        let pins = new_pins();
        let df = self.plan(&query.query, None, pins.clone()).await?;
        let ticket = QueryTicket { sql: Some(query.query), ..Default::default() };
        let info = self.describe_query(df, &pins, request.into_inner(), ticket).await?;
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
        let who = self.authorize(&request)?;
        let df = self.plan(&query.query, None, new_pins()).await?;
        let params = parameter_types(&df)?;
        let dataset_schema = df.schema().as_arrow().clone();
        let parameter_schema = Schema::new(
            params
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("${}", i + 1), t.clone().unwrap_or(DataType::Utf8), true))
                .collect::<Vec<_>>(),
        );
        let handle = self.add_prepared(Prepared {
            sql: query.query,
            param_types: params,
            params: None,
            owner: who.subject,
        })?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: ipc_schema(&dataset_schema)?,
            parameter_schema: ipc_schema(&parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = self.authorize(&request)?;
        let prepared = self.prepared(&query.prepared_statement_handle, &who)?;
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
        let params = bind_row(&batch, &prepared.param_types)?;
        self.bind_prepared(&query.prepared_statement_handle, params)?;
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.authorize(&request)?;
        let prepared = self.prepared(&cmd.prepared_statement_handle, &who)?;
        let pins = new_pins();
        let df = self.plan(&prepared.sql, prepared.params, pins.clone()).await?;
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).to_string();
        let ticket = QueryTicket { prepared: Some(handle), ..Default::default() };
        let info = self.describe_query(df, &pins, request.into_inner(), ticket).await?;
        Ok(Response::new(info))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let who = self.authorize(&request)?;
        self.prepared(&query.prepared_statement_handle, &who)?;
        Ok(self.close_prepared(&query.prepared_statement_handle)?)
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
        self.authorize(&request)?;
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
        self.authorize(&request)?;
        let mut b = query.into_builder();
        for dataset in self.store().datasets().map_err(Error::from)? {
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
        self.authorize(&request)?;
        let wants_type = query.table_types.is_empty() || query.table_types.iter().any(|t| t == "TABLE");
        let mut b = query.into_builder();
        let store = self.store();
        let datasets = if wants_type { store.datasets() } else { Ok(Vec::new()) };
        for dataset in datasets.map_err(Error::from)? {
            let tables = crate::catalog::table_schemas(store, &dataset).map_err(Error::from)?;
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
        self.authorize(&request)?;
        let mut b = query.into_builder();
        b.append("TABLE");
        Self::reply(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(self.sql_info_data()).schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        Self::reply(query.into_builder(self.sql_info_data()).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(self.xdbc_data()).schema();
        self.describe(request, &schema, &query)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        Self::reply(query.into_builder(self.xdbc_data()).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
