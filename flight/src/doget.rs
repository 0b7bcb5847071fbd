//! DoGet responses that hand the Arrow buffers to HTTP/2 without copying them.
//!
//! The generated `FlightServiceServer` answers DoGet with arrow-flight's encoder, which copies
//! every buffer of a batch into one IPC body, and then prost, which copies that body again into
//! the gRPC frame: two copies of every result byte before the kernel's. [`Router`] serves DoGet
//! itself and passes every other method to the generated server:
//!
//! * a statement's result goes through arrow-ipc's [`StreamEncoder`], whose uncompressed
//!   bodies are the batches' own buffers; each IPC message becomes one gRPC frame of
//!   `FlightData` — a small head (frame header, `data_header`, the key and length of
//!   `data_body`) and then the body's buffers as they are;
//! * metadata commands (one small batch) and schemas with dictionary or nested columns keep
//!   the generic encoder, re-framed the same way.
//!
//! The wire bytes are a valid `FlightData` protobuf, so any gRPC client reads them. Encoding
//! runs on its own task ahead of the connection's, which writes to the socket.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamEncoder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::{Any, Command};
use arrow_flight::{FlightData, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message as _;
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Status};

use crate::FlightSql;
use crate::error::{Error, query_status, status};

const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// The largest ticket accepted (they are a few hundred bytes).
const MAX_TICKET_BYTES: usize = 1 << 20;
/// Protobuf key of `FlightData.data_body` (field 1000, length-delimited).
const DATA_BODY_KEY: u64 = (1000 << 3) | 2;
/// Batches are cut into messages of about this size (arrow-flight's default): gRPC clients
/// refuse messages over 4 MiB unless told otherwise.
const MAX_MESSAGE_BYTES: usize = 2 << 20;
/// Body buffers shorter than this are copied together rather than sent one by one.
const COALESCE_BELOW: usize = 4 << 10;
/// How many encoded messages a DoGet may run ahead of the connection writing them.
const ENCODED_AHEAD: usize = 4;

/// The Flight service: `DoGet` here, everything else in the generated server.
#[derive(Clone)]
pub(super) struct Router {
    generated: FlightServiceServer<FlightSql>,
    service: FlightSql,
}

impl Router {
    pub(super) fn new(service: FlightSql, max_decoding_message_size: usize) -> Router {
        let generated =
            FlightServiceServer::new(service.clone()).max_decoding_message_size(max_decoding_message_size);
        Router { generated, service }
    }
}

impl NamedService for Router {
    const NAME: &'static str = <FlightServiceServer<FlightSql> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != DO_GET {
            return self.generated.call(request);
        }
        let service = self.service.clone();
        Box::pin(async move { Ok(do_get(service, request).await.unwrap_or_else(Status::into_http)) })
    }
}

async fn do_get(service: FlightSql, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
    let (parts, body) = request.into_parts();
    let ticket = read_ticket(body, &parts.headers).await?;
    let request = Request::from_parts(MetadataMap::from_headers(parts.headers), parts.extensions, ticket);
    let statement =
        Any::decode(&*request.get_ref().ticket).ok().and_then(|any| match Command::try_from(any) {
            Ok(Command::TicketStatementQuery(ticket)) => Some(ticket),
            _ => None,
        });
    let (metadata, messages) = match statement {
        Some(ticket) => {
            let (schema, batches) = service.statement_batches(ticket, &request).await?;
            let messages = if zero_copy_encodable(&schema) {
                encode_ahead(ipc_messages(schema, batches))
            } else {
                encode_ahead(FlightSql::flight_data(schema, batches).map(|data| data.map(Message::from)))
            };
            (MetadataMap::new(), messages)
        }
        None => {
            let (metadata, stream, _) = FlightService::do_get(&service, request).await?.into_parts();
            (metadata, Box::pin(stream.map(|data| data.map(Message::from))) as MessageStream)
        }
    };
    let mut response = http::Response::new(Body::new(MessageBody::new(messages)));
    let headers = response.headers_mut();
    *headers = metadata.into_headers();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// The one gRPC message of a DoGet request: a `Ticket`, uncompressed.
async fn read_ticket(body: Body, headers: &http::HeaderMap) -> crate::error::Result<Ticket> {
    if headers.get("grpc-encoding").is_some_and(|e| e != "identity") {
        return Err(Error::Unsupported("compressed DoGet requests are not supported".into()));
    }
    let bytes = http_body_util::Limited::new(body, MAX_TICKET_BYTES + 5)
        .collect()
        .await
        .map_err(|e| Error::BadRequest(format!("reading the DoGet request: {e}")))?
        .to_bytes();
    let [flag, a, b, c, d, message @ ..] = &bytes[..] else {
        return Err(Error::BadRequest("the DoGet request has no message".into()));
    };
    if *flag != 0 {
        return Err(Error::Unsupported("compressed DoGet requests are not supported".into()));
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if len != message.len() {
        return Err(Error::BadRequest(format!(
            "the DoGet request must hold one message of {len} bytes, it has {} bytes",
            message.len()
        )));
    }
    Ticket::decode(message).map_err(|e| Error::BadRequest(format!("decoding the ticket: {e}")))
}

/// One gRPC message of `FlightData`: the frame header and every field but the body, then the
/// `data_body` bytes, possibly in several pieces.
struct Message {
    head: Bytes,
    body: Vec<Bytes>,
}

impl Message {
    /// The message of `fields` (its `data_body` empty) followed by a body of `body_len` bytes
    /// in `body`: prost writes the fields, then the body's key and length, as it would.
    fn new(fields: &FlightData, body: Vec<Bytes>, body_len: usize) -> Message {
        let body_key = if body_len == 0 {
            0
        } else {
            encoded_len_varint(DATA_BODY_KEY) + encoded_len_varint(body_len as u64)
        };
        let fields_len = fields.encoded_len();
        let mut head = BytesMut::with_capacity(5 + fields_len + body_key);
        head.put_u8(0);
        head.put_u32((fields_len + body_key + body_len) as u32);
        fields.encode(&mut head).expect("the buffer was sized for the message");
        if body_len > 0 {
            encode_varint(DATA_BODY_KEY, &mut head);
            encode_varint(body_len as u64, &mut head);
        }
        Message { head: head.freeze(), body }
    }
}

impl From<FlightData> for Message {
    fn from(mut data: FlightData) -> Message {
        let body = std::mem::take(&mut data.data_body);
        let body_len = body.len();
        Message::new(&data, if body.is_empty() { Vec::new() } else { vec![body] }, body_len)
    }
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send + 'static>>;

/// Whether arrow-flight's encoder must handle `schema`: it sends dictionary columns hydrated
/// (as the plain type the advertised schema names), and we keep nested types on the path the
/// clients were tested with.
fn zero_copy_encodable(schema: &SchemaRef) -> bool {
    schema
        .fields()
        .iter()
        .all(|f| !matches!(f.data_type(), DataType::Dictionary(..)) && !f.data_type().is_nested())
}

/// The IPC messages of `batches`: the schema first (also when there is no batch), then one
/// record batch message per slice of at most about [`MAX_MESSAGE_BYTES`].
fn ipc_messages(schema: SchemaRef, batches: SendableRecordBatchStream) -> MessageStream {
    let encoder = match StreamEncoder::try_new(&schema) {
        Ok(encoder) => encoder,
        Err(e) => {
            let status = status(Error::Internal(format!("encoding the schema: {e}")));
            return Box::pin(futures::stream::once(async move { Err(status) }));
        }
    };
    let messages = futures::stream::unfold(Some((encoder, batches, false)), |state| async move {
        let (mut encoder, mut batches, sent) = state?;
        match batches.next().await {
            Some(Ok(batch)) => match encode_batch(&mut encoder, &batch) {
                Ok(messages) => {
                    Some((messages.into_iter().map(Ok).collect(), Some((encoder, batches, true))))
                }
                Err(status) => Some((vec![Err(status)], None)),
            },
            Some(Err(e)) => Some((vec![Err(query_status(e))], None)),
            // The stream's end: the schema, if no batch carried it (the end-of-stream marker
            // is not sent: Flight ends with the call).
            None if !sent => {
                let items = encoder
                    .finish()
                    .and_then(split_messages)
                    .map_or_else(|e| vec![Err(status(Error::Arrow(e)))], |m| m.into_iter().map(Ok).collect());
                Some((items, None))
            }
            None => None,
        }
    });
    Box::pin(messages.flat_map(futures::stream::iter))
}

fn encode_batch(encoder: &mut StreamEncoder, batch: &RecordBatch) -> Result<Vec<Message>, Status> {
    let internal = |e: ArrowError| status(Error::Internal(format!("encoding a batch: {e}")));
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size())
        .sum::<Result<usize, _>>()
        .map_err(internal)?;
    let rows = batch.num_rows();
    let pieces = bytes.div_ceil(MAX_MESSAGE_BYTES).clamp(1, rows.max(1));
    let rows_per_piece = rows.div_ceil(pieces).max(1);
    let mut messages = Vec::with_capacity(pieces + 1);
    let mut offset = 0;
    loop {
        let len = rows_per_piece.min(rows - offset);
        messages
            .extend(encoder.encode(&batch.slice(offset, len)).and_then(split_messages).map_err(internal)?);
        offset += len;
        if offset >= rows {
            return Ok(messages);
        }
    }
}

/// Cuts arrow-ipc's encapsulated stream (continuation marker, metadata length, metadata,
/// padding, body) into messages; the metadata is copied (it is small), the body is not.
fn split_messages(segments: Vec<Buffer>) -> Result<Vec<Message>, ArrowError> {
    let mut input = Segments { segments: segments.into() };
    let mut messages = Vec::new();
    while !input.is_empty() {
        let prefix = input.copy(8)?;
        if prefix[..4] != [0xff; 4] {
            return Err(ArrowError::IpcError("expected the IPC continuation marker".into()));
        }
        let metadata_len = i32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let metadata_len = usize::try_from(metadata_len)
            .map_err(|_| ArrowError::IpcError(format!("negative IPC metadata length {metadata_len}")))?;
        if metadata_len == 0 {
            break; // end of stream
        }
        let metadata = input.copy(metadata_len)?;
        let message = arrow::ipc::root_as_message(&metadata)
            .map_err(|e| ArrowError::IpcError(format!("reading the IPC message: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| ArrowError::IpcError("negative IPC body length".into()))?;
        let body = input.share(body_len)?;
        let fields = FlightData { data_header: metadata.into(), ..Default::default() };
        messages.push(Message::new(&fields, body, body_len));
    }
    Ok(messages)
}

/// A byte stream held as the buffers arrow-ipc wrote it in.
struct Segments {
    segments: VecDeque<Buffer>,
}

impl Segments {
    fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.is_empty())
    }

    /// The next `n` bytes, copied.
    fn copy(&mut self, n: usize) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let segment = self.segments.front_mut().ok_or_else(|| truncated(n))?;
            let take = segment.len().min(n - out.len());
            out.extend_from_slice(&segment[..take]);
            self.advance(take);
        }
        Ok(out)
    }

    /// The next `n` bytes, sharing the buffers; runs of short buffers (padding, offsets of a
    /// small batch) are copied together.
    fn share(&mut self, n: usize) -> Result<Vec<Bytes>, ArrowError> {
        let mut out = Vec::new();
        let mut small = BytesMut::new();
        let mut left = n;
        while left > 0 {
            let segment = self.segments.front().ok_or_else(|| truncated(n))?;
            let take = segment.len().min(left);
            if take < COALESCE_BELOW {
                small.put_slice(&segment[..take]);
            } else {
                if !small.is_empty() {
                    out.push(small.split().freeze());
                }
                out.push(Bytes::from_owner(Shared(segment.slice_with_length(0, take))));
            }
            self.advance(take);
            left -= take;
        }
        if !small.is_empty() {
            out.push(small.freeze());
        }
        Ok(out)
    }

    fn advance(&mut self, n: usize) {
        if let Some(front) = self.segments.front_mut() {
            if n >= front.len() {
                self.segments.pop_front();
            } else {
                *front = front.slice(n);
            }
        }
    }
}

fn truncated(wanted: usize) -> ArrowError {
    ArrowError::IpcError(format!("the IPC stream ended inside a message ({wanted} bytes expected)"))
}

/// An Arrow buffer lent to `Bytes` (it keeps the buffer alive).
struct Shared(Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Runs `stream` (the query and the encoding) on its own task, so that it works ahead while
/// the connection's task writes to the socket; on a large DoGet the two take about the same
/// CPU, and in one task they would take turns. The task stops when the response is dropped
/// (the client went away) or after the first error.
fn encode_ahead(stream: impl Stream<Item = Result<Message, Status>> + Send + 'static) -> MessageStream {
    let (tx, rx) = tokio::sync::mpsc::channel(ENCODED_AHEAD);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// A streaming gRPC response body: the messages' bytes, then the status trailers.
struct MessageBody {
    messages: Option<MessageStream>,
    pending: VecDeque<Bytes>,
}

impl MessageBody {
    fn new(messages: MessageStream) -> MessageBody {
        MessageBody { messages: Some(messages), pending: VecDeque::new() }
    }
}

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.pending.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(messages) = self.messages.as_mut() else {
            return Poll::Ready(None);
        };
        let status = match futures::ready!(messages.poll_next_unpin(cx)) {
            Some(Ok(message)) => {
                self.pending.extend(message.body);
                return Poll::Ready(Some(Ok(Frame::data(message.head))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.messages = None;
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.insert(Status::GRPC_STATUS, (tonic::Code::Internal as i32).into());
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.messages.is_none() && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;

    /// The bytes a client reads for `message`, as the `FlightData` it decodes.
    fn on_the_wire(message: &Message) -> FlightData {
        let mut wire = message.head.to_vec();
        for piece in &message.body {
            wire.extend_from_slice(piece);
        }
        assert_eq!(wire[0], 0, "uncompressed");
        assert_eq!(u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize, wire.len() - 5);
        FlightData::decode(&wire[5..]).expect("a FlightData protobuf")
    }

    #[test]
    fn generic_messages_carry_the_bytes_prost_writes() {
        let with_body = FlightData {
            flight_descriptor: None,
            data_header: Bytes::from_static(b"header bytes"),
            app_metadata: Bytes::from_static(b"meta"),
            data_body: Bytes::from(vec![7u8; 300]),
        };
        let empty_body = FlightData { data_body: Bytes::new(), ..with_body.clone() };
        for data in [with_body, empty_body] {
            let expected = data.encode_to_vec();
            let message = Message::from(data);
            let mut wire = message.head.to_vec();
            wire.extend(message.body.iter().flat_map(|b| b.iter()));
            assert_eq!(&wire[5..], &expected[..]);
        }
    }

    fn batch(rows: usize, text_len: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())), true),
        ]));
        let text: StringArray =
            (0..rows).map(|i| (i % 7 != 3).then(|| format!("{i:>width$}é", width = text_len))).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("id-{i}")))),
            Arc::new(text),
            Arc::new(Int64Array::from_iter_values((0..rows as i64).map(|i| i * 3 - 100))),
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    (0..rows as i64).map(|i| (i % 5 != 0).then_some(i * 1000)),
                )
                .with_timezone("+00:00"),
            ),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// Encodes `batches` the zero-copy way and decodes them with arrow-flight's decoder.
    async fn round_trip(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> (Vec<Message>, SchemaRef, Vec<RecordBatch>) {
        let input = futures::stream::iter(batches.into_iter().map(Ok));
        let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(schema, input));
        let messages: Vec<Message> =
            ipc_messages(stream.schema(), stream).map(|m| m.unwrap()).collect().await;
        let wire = messages.iter().map(|m| Ok(on_the_wire(m))).collect::<Vec<_>>();
        let mut decoder = FlightDataDecoder::new(futures::stream::iter(wire));
        let (mut schema, mut out) = (None, Vec::new());
        while let Some(decoded) = decoder.next().await {
            match decoded.unwrap().payload {
                DecodedPayload::Schema(s) => schema = Some(s),
                DecodedPayload::RecordBatch(b) => out.push(b),
                DecodedPayload::None => {}
            }
        }
        (messages, schema.expect("a schema message"), out)
    }

    #[tokio::test]
    async fn statement_results_decode_to_the_same_batches_and_share_their_buffers() {
        // 20,000 rows of ~300-byte texts: ~6 MB, so the batch is cut into messages of ~2 MiB.
        let big = batch(20_000, 300);
        let small = batch(10, 3);
        let schema = big.schema();
        let (messages, decoded_schema, decoded) =
            round_trip(schema.clone(), vec![big.clone(), small.clone()]).await;
        assert_eq!(decoded_schema, schema);
        assert_eq!(
            arrow::compute::concat_batches(&schema, &decoded).unwrap(),
            arrow::compute::concat_batches(&schema, &[big.clone(), small]).unwrap()
        );
        assert!(decoded.len() >= 4, "the 6 MB batch is cut: {} batches", decoded.len());
        assert!(messages.iter().all(|m| on_the_wire(m).encoded_len() <= MAX_MESSAGE_BYTES + (64 << 10)));

        // The texts' bytes go out of the batch's own buffer, not a copy.
        let values = big.column(1).to_data().buffers()[1].clone();
        let range = values.as_ptr() as usize..values.as_ptr() as usize + values.len();
        let shared: usize = messages
            .iter()
            .flat_map(|m| &m.body)
            .filter(|piece| range.contains(&(piece.as_ptr() as usize)))
            .map(|piece| piece.len())
            .sum();
        assert_eq!(shared, values.len(), "every text byte is sent from the batch's buffer");
    }

    #[tokio::test]
    async fn an_empty_result_still_sends_its_schema() {
        let schema = batch(0, 1).schema();
        let (messages, decoded_schema, decoded) = round_trip(schema.clone(), vec![]).await;
        assert_eq!(messages.len(), 1);
        assert_eq!(decoded_schema, schema);
        assert!(decoded.is_empty());
    }

    #[test]
    fn dictionary_and_nested_columns_keep_the_generic_encoder() {
        let plain = batch(1, 1).schema();
        assert!(zero_copy_encodable(&plain));
        let dictionary = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )]));
        assert!(!zero_copy_encodable(&dictionary));
        let nested = Arc::new(Schema::new(vec![Field::new_list(
            "l",
            Field::new_list_field(DataType::Int64, true),
            true,
        )]));
        assert!(!zero_copy_encodable(&nested));
    }
}
