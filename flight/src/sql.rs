//! The SQL side of Flight SQL that needs no server state: `?` placeholders, bound parameters,
//! the advertised SQL info and types, IPC schemas and the handshake's basic credentials.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedTransaction, XdbcDataType,
};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use base64::Engine;
use datafusion::prelude::DataFrame;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use schemas::auth::AuthError;

use crate::error::{Error, Result};

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

pub(crate) fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

pub(crate) fn sql_info() -> SqlInfoData {
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

pub(crate) fn xdbc_types() -> XdbcTypeInfoData {
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
pub(crate) fn bind_row(batch: &RecordBatch, expected: &[Option<DataType>]) -> Result<Vec<ScalarValue>> {
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
pub(crate) fn parameter_types(df: &DataFrame) -> Result<Vec<Option<DataType>>> {
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

pub(crate) fn decode_basic(header: &str) -> Result<(String, String)> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Field;

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
