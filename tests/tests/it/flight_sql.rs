//! The Flight SQL server through arrow-flight's own Flight SQL client (not ours): metadata
//! endpoints, advertised schemas equal to the streamed ones, prepared statements, and the
//! refusal of requests without a token when authentication is on; and the version cache
//! answering as the Parquet objects do.

use std::collections::HashSet;
use std::sync::Arc;

use ::flight::FlightSql;
use arrow::array::{ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo};
use arrow_flight::{FlightInfo, Ticket};
use futures::TryStreamExt;
use schemas::auth::{AuthError, Authenticator, IssuedToken, Principal, Role};
use schemas::records::clean_schema;
use stream::store::{Draft, DraftPart, SnapshotStore};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Accepts exactly one token, `good`, as a viewer.
#[derive(Debug)]
struct OneToken {
    enabled: bool,
}

impl Authenticator for OneToken {
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn login(&self, _: &str, _: &str) -> Result<IssuedToken, AuthError> {
        Err(AuthError::Unavailable("no logins here".into()))
    }
    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        match token {
            "good" => Ok(Principal { subject: "t".into(), roles: vec![Role::Viewer] }),
            _ => Err(AuthError::Unauthenticated("bad token".into())),
        }
    }
}

fn version(store: &SnapshotStore, rows: std::ops::Range<i64>) -> anyhow::Result<()> {
    let n = rows.clone().count();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.clone().map(|i| format!("id{i}")))),
        Arc::new(StringArray::from_iter_values(rows.clone().map(|i| format!("text number {i}")))),
        Arc::new(StringArray::from_iter(rows.clone().map(|i| Some(if i % 3 == 0 { "spam" } else { "ham" })))),
        Arc::new(StringArray::from_iter((0..n).map(|_| None::<&str>))),
        Arc::new(
            arrow::array::TimestampMillisecondArray::from(vec![None; n])
                .with_timezone(schemas::records::TS_TZ),
        ),
        Arc::new(StringArray::from_iter((0..n).map(|_| None::<&str>))),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from_iter_values(rows)),
    ];
    let mut w = store.object_writer(clean_schema())?;
    w.write(&RecordBatch::try_new(clean_schema(), cols)?)?;
    let draft = Draft {
        dataset: "text".into(),
        spec_hash: "test-spec".into(),
        schema: clean_schema(),
        parts: vec![DraftPart { consumed: None, file: w.finish()? }],
        tags: vec![],
        replace_files: false,
        imported: vec![],
        raw: None,
    };
    store.commit(draft, chrono::Utc::now())?;
    Ok(())
}

async fn start(
    auth: bool,
) -> anyhow::Result<(FlightSqlServiceClient<Channel>, tempfile::TempDir, CancellationToken)> {
    let dir = tempfile::tempdir()?;
    let store = SnapshotStore::open(dir.path())?;
    version(&store, 0..30)?;
    version(&store, 30..50)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let cancel = CancellationToken::new();
    let service = FlightSql::new(store, "text", Arc::new(OneToken { enabled: auth }), 2, 0);
    tokio::spawn(::flight::serve(addr, Default::default(), service, cancel.clone()));
    let channel = loop {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))?.connect().await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    Ok((FlightSqlServiceClient::new(channel), dir, cancel))
}

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> anyhow::Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for e in info.endpoint {
        let ticket: Ticket = e.ticket.expect("ticket");
        out.extend(client.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

#[tokio::test]
async fn metadata_schemas_and_prepared_statements_through_the_arrow_flight_client() -> anyhow::Result<()> {
    let (mut client, dir, cancel) = start(false).await?;

    // Advertised schema == streamed schema (nullability included), for a query with an
    // aggregate, a join and a computed column.
    for sql in [
        "SELECT label, count(*) AS n FROM latest GROUP BY label ORDER BY label",
        "SELECT b.id, upper(b.text) AS t FROM text.v2 b LEFT JOIN text.v1 a ON a.id = b.id WHERE a.id IS NULL",
        "SELECT * FROM text.versions",
    ] {
        let info = client.execute(sql.to_string(), None).await?;
        let advertised = info.clone().try_decode_schema()?;
        let batches = fetch(&mut client, info).await?;
        assert!(!batches.is_empty(), "{sql}");
        for b in &batches {
            assert_eq!(b.schema().as_ref(), &advertised, "{sql}");
        }
    }
    let info = client
        .execute(
            "SELECT count(*) FROM text.v2 b LEFT JOIN text.v1 a ON a.id = b.id WHERE a.id IS NULL".into(),
            None,
        )
        .await?;
    let added = fetch(&mut client, info).await?;
    assert_eq!(added[0].column(0).as_primitive::<Int64Type>().value(0), 20);

    // A plain scan of a version of two objects: every row once.
    let info = client.execute("SELECT id FROM latest".into(), None).await?;
    let endpoints = info.endpoint.len();
    let ids: Vec<String> = fetch(&mut client, info)
        .await?
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(String::from).collect::<Vec<_>>())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (50, 50), "{endpoints} endpoints");

    // Metadata.
    let info = client.get_db_schemas(CommandGetDbSchemas::default()).await?;
    let schemas = fetch(&mut client, info).await?;
    assert_eq!(schemas[0].column(1).as_string::<i32>().value(0), "text");
    let tables = CommandGetTables {
        include_schema: true,
        db_schema_filter_pattern: Some("te%".into()),
        ..Default::default()
    };
    let info = client.get_tables(tables).await?;
    let tables = fetch(&mut client, info).await?;
    let names: Vec<&str> = tables[0].column(2).as_string::<i32>().iter().flatten().collect();
    assert_eq!(names, ["latest", "v1", "v2", "versions"]); // sorted by the builder
    let info = client.get_table_types().await?;
    let types = fetch(&mut client, info).await?;
    assert_eq!(types[0].column(0).as_string::<i32>().value(0), "TABLE");
    let info =
        client.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerReadOnly]).await?;
    let infos = fetch(&mut client, info).await?;
    assert_eq!(infos[0].num_rows(), 2);
    let info = client.get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None }).await?;
    let xdbc = fetch(&mut client, info).await?;
    let type_names: Vec<&str> = xdbc[0].column(0).as_string::<i32>().iter().flatten().collect();
    assert!(type_names.contains(&"VARCHAR") && type_names.contains(&"BIGINT"), "{type_names:?}");

    // A prepared statement: parameters inferred, bound, executed, closed.
    let mut prepared = client
        .prepare("SELECT count(*) AS n FROM latest WHERE label = ? AND kafka_offset >= ?".into(), None)
        .await?;
    assert_eq!(prepared.parameter_schema()?.fields().len(), 2);
    let params = RecordBatch::try_from_iter([
        ("a", Arc::new(StringArray::from(vec!["spam"])) as ArrayRef),
        ("b", Arc::new(Int32Array::from(vec![30])) as ArrayRef),
    ])?;
    prepared.set_parameters(params)?;
    let info = prepared.execute().await?;
    let got = fetch(&mut client, info).await?;
    let expected = (30..50).filter(|i| i % 3 == 0).count() as i64;
    assert_eq!(got[0].column(0).as_primitive::<Int64Type>().value(0), expected);
    prepared.close().await?;

    // The oldest of more than max_prepared (2) statements is closed.
    let mut first = client.prepare("SELECT 1".into(), None).await?;
    let _second = client.prepare("SELECT 2".into(), None).await?;
    let _third = client.prepare("SELECT 3".into(), None).await?;
    let err = first.execute().await.expect_err("evicted");
    assert!(err.to_string().contains("prepared statement"), "{err}");

    // A ticket reads the versions its FlightInfo was planned on, even after `latest` moved.
    let info = client.execute("SELECT count(*) FROM latest".into(), None).await?;
    version(&SnapshotStore::open(dir.path())?, 50..60)?;
    let pinned = fetch(&mut client, info).await?;
    assert_eq!(pinned[0].column(0).as_primitive::<Int64Type>().value(0), 50);
    let info = client.execute("SELECT count(*) FROM latest".into(), None).await?;
    let now = fetch(&mut client, info).await?;
    assert_eq!(now[0].column(0).as_primitive::<Int64Type>().value(0), 60);

    // Bad SQL is the client's error.
    let err = client.execute("SELEC nothing".into(), None).await.expect_err("bad SQL");
    assert!(err.to_string().contains("InvalidArgument") || err.to_string().contains("invalid"), "{err}");
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn without_a_token_every_call_is_refused_and_a_good_token_is_served() -> anyhow::Result<()> {
    let (mut client, _dir, cancel) = start(true).await?;
    let err = client.execute("SELECT 1".into(), None).await.expect_err("no token");
    assert!(err.to_string().contains("no bearer token"), "{err}");
    let err = client.get_table_types().await.expect_err("no token");
    assert!(err.to_string().contains("no bearer token"), "{err}");
    client.set_token("bad".into());
    let err = client.execute("SELECT 1".into(), None).await.expect_err("bad token");
    assert!(err.to_string().contains("bad token"), "{err}");
    client.set_token("good".into());
    let info = client.execute("SELECT count(*) FROM latest".into(), None).await?;
    let got = fetch(&mut client, info).await?;
    assert_eq!(got[0].column(0).as_primitive::<Int64Type>().value(0), 50);
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn a_cached_version_answers_as_its_parquet_objects_do() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SnapshotStore::open(dir.path())?;
    version(&store, 0..30)?;
    version(&store, 30..50)?;
    let open = Arc::new(OneToken { enabled: false });
    let parquet = FlightSql::new(store.clone(), "text", open.clone(), 2, 0);
    let cached = FlightSql::new(store.clone(), "text", open, 2, 64 << 20);
    let queries = [
        "SELECT * FROM latest ORDER BY id",
        "SELECT label, count(*) AS n, sum(length(text)) AS chars FROM text.v1 GROUP BY label ORDER BY label",
        "SELECT b.id FROM text.v2 b LEFT JOIN text.v1 a ON a.id = b.id WHERE a.id IS NULL ORDER BY b.id",
    ];
    let run = |service: &FlightSql, sql: &'static str| {
        let service = service.clone();
        async move {
            let batches = service.plan(sql, None, Default::default()).await?.collect().await?;
            anyhow::Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
        }
    };
    let mut expected = Vec::new();
    for sql in queries {
        expected.push(run(&parquet, sql).await?);
        // The first use reads Parquet (and starts loading the version).
        assert_eq!(run(&cached, sql).await?, expected[expected.len() - 1], "{sql}");
    }
    let ids = [store.resolve("text", "v1")?.id, store.resolve("text", "v2")?.id];
    for _ in 0..200 {
        if ids.iter().all(|id| cached.cache().get(id).is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ids.iter().all(|id| cached.cache().get(id).is_some()), "both versions are loaded");
    assert!(cached.cache().used() > 0);
    assert_eq!(parquet.cache().used(), 0, "cache_bytes 0 keeps nothing");
    for (sql, expected) in queries.iter().zip(&expected) {
        assert_eq!(&run(&cached, sql).await?, expected, "{sql} from memory");
    }
    Ok(())
}
