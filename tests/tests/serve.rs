//! `serve --socket` against clients that misbehave, on a tiny model: a client that does not read,
//! one that stalls mid-line, one that floods requests or connections cost only their own
//! connection; a stop answers what was read and removes the socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use edgebert_runtime::serve::{Limits, ServeStats, Server, StopHandle};
use edgebert_runtime::{Classifier, ClassifierOptions};
use edgebert_tests::TinyModel;
use serde_json::{json, Value};

/// A generous bound for "answered at all" (a hang fails, a slow machine does not).
const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    socket: PathBuf,
    stop: StopHandle,
    done: mpsc::Receiver<ServeStats>,
    _thread: JoinHandle<()>,
}

impl Running {
    fn start(model: &TinyModel, limits: Limits) -> Running {
        let socket = model.path("serve.sock");
        let classifier = Classifier::open(&model.bundle, ClassifierOptions::default()).unwrap();
        let server = Server::bind(&socket, limits).unwrap();
        let stop = server.stop_handle();
        let (tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let stats = server.run(classifier).unwrap();
            let _ = tx.send(stats);
        });
        Running {
            socket,
            stop,
            done,
            _thread: thread,
        }
    }

    fn connect(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Stops the server and waits for it (bounded): what it did.
    fn stop(self) -> ServeStats {
        self.stop.stop();
        let stats = self
            .done
            .recv_timeout(PATIENCE)
            .expect("the server returns after a stop");
        assert!(!self.socket.exists(), "the socket file is removed");
        stats
    }
}

struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn new(path: &Path) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    fn send(&mut self, request: &Value) {
        writeln!(self.stream, "{request}").unwrap();
    }

    /// The next answer line, or `None` at EOF.
    fn answer(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("an answer in time");
        assert!(n == 0 || line.ends_with('\n'), "a whole line: {line:?}");
        (n > 0).then(|| serde_json::from_str(&line).unwrap())
    }

    /// Whether the server closed this connection (EOF within a moment, nothing to read).
    fn closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut line = String::new();
        let eof = matches!(self.reader.read_line(&mut line), Ok(0));
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        eof
    }

    fn ask(&mut self, request: &Value) -> Value {
        self.send(request);
        self.answer().expect("an answer")
    }
}

fn text(i: usize) -> String {
    [
        "great acting",
        "a dull plot",
        "warm and funny",
        "it never ends",
    ][i % 4]
        .repeat(1 + i % 3)
}

#[test]
fn a_client_that_does_not_read_its_answers_stops_nobody_and_is_cut_off() {
    let m = TinyModel::new();
    let limits = Limits {
        write_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let server = Running::start(&m, limits);
    // Sends large requests and never reads: its answers fill the socket and the server's queue.
    let mut greedy = UnixStream::connect(&server.socket).unwrap();
    let flood = std::thread::spawn(move || {
        let texts: Vec<String> = (0..256).map(text).collect();
        for id in 0..400 {
            let line = format!("{}\n", json!({"id": id, "texts": texts}));
            if greedy.write_all(line.as_bytes()).is_err() {
                return true; // cut off
            }
        }
        false
    });
    let mut polite = server.connect();
    for id in 0..20 {
        let a = polite.ask(&json!({"id": id, "text": text(id)}));
        assert_eq!(a["id"], id);
        assert!(a["label"].is_string(), "{a}");
    }
    assert!(
        flood.join().unwrap(),
        "the client that does not read is cut off"
    );
    let stats = server.stop();
    assert_eq!(stats.cut_off, 1, "{stats}");
}

#[test]
fn a_client_that_pipelines_many_requests_gets_its_turn_and_no_more() {
    let m = TinyModel::new();
    let server = Running::start(&m, Limits::default());
    let mut flood = server.connect();
    let many = 300;
    for id in 0..many {
        flood.send(&json!({"id": id, "text": text(id)}));
    }
    let counted = Arc::new(AtomicUsize::new(0));
    let reader = {
        let counted = Arc::clone(&counted);
        std::thread::spawn(move || {
            for id in 0..many {
                let a = flood.answer().unwrap();
                assert_eq!(a["id"], id, "in order");
                counted.fetch_add(1, Ordering::SeqCst);
            }
            flood.stream.shutdown(std::net::Shutdown::Write).unwrap();
            flood.answer().is_none()
        })
    };
    let mut other = server.connect();
    let a = other.ask(&json!({"id": "other", "text": "great acting"}));
    assert_eq!(a["id"], "other");
    let before = counted.load(Ordering::SeqCst);
    assert!(
        before < many,
        "answered after {before} of the flood's {many}"
    );
    assert!(reader.join().unwrap());
    let stats = server.stop();
    assert_eq!(stats.answered, many as u64 + 1, "{stats}");
}

#[test]
fn a_texts_request_answered_across_turns_equals_one_batch() {
    let m = TinyModel::new();
    let texts: Vec<String> = (0..11).map(text).chain([String::new()]).collect();
    let mut direct = Classifier::open(&m.bundle, ClassifierOptions::default()).unwrap();
    let expected = direct.classify_batch(&texts).unwrap();
    let server = Running::start(&m, Limits::default());
    let mut client = server.connect();
    let a = client.ask(&json!({"id": 5, "texts": texts, "top_k": 1}));
    let results = a["results"].as_array().unwrap();
    assert_eq!(results.len(), expected.len());
    for (got, want) in results.iter().zip(&expected) {
        match want {
            Ok(p) => {
                assert_eq!(got["label"], p.label.as_str());
                let d = (got["probability"].as_f64().unwrap() - f64::from(p.probability)).abs();
                assert!(d < 1e-6, "{got} vs {p:?}");
                assert_eq!(got["scores"].as_array().unwrap().len(), 1);
            }
            Err(e) => assert_eq!(got["error"], e.to_string()),
        }
    }
    let too_many = client.ask(&json!({"id": 6, "texts": vec!["x"; 257]}));
    assert!(too_many["error"].as_str().unwrap().contains("at most 256"));
    server.stop();
}

#[test]
fn connections_over_the_bound_are_refused_unless_one_is_idle() {
    let m = TinyModel::new();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = Running::start(&m, limits);
    // Two clients halfway through a line: busy, not idle.
    let mut a = server.connect();
    let mut b = server.connect();
    a.stream.write_all(br#"{"id": "a", "text": "gre"#).unwrap();
    b.stream.write_all(br#"{"id": "b", "text": "gre"#).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = server.connect();
    let refused = c.answer().expect("an error line");
    assert!(refused["error"].as_str().unwrap().contains("server busy"));
    assert!(c.answer().is_none(), "then closed");
    // Both finish their lines and are answered; once they have been idle a while, a new client
    // takes the place of the idlest.
    a.stream.write_all(b"at\"}\n").unwrap();
    b.stream.write_all(b"at\"}\n").unwrap();
    assert_eq!(a.answer().unwrap()["id"], "a");
    assert_eq!(b.answer().unwrap()["id"], "b");
    std::thread::sleep(
        edgebert_runtime::serve::socket::MIN_IDLE_TO_EVICT + Duration::from_millis(200),
    );
    let mut d = server.connect();
    assert_eq!(d.ask(&json!({"id": "d", "text": "fine"}))["id"], "d");
    let evicted = [a.closed(), b.closed()].iter().filter(|&&x| x).count();
    assert_eq!(evicted, 1, "one idle connection made room");
    let stats = server.stop();
    assert_eq!(stats.rejected, 1, "{stats}");
}

#[test]
fn a_line_too_long_or_stalled_is_answered_with_an_error_and_closed() {
    let m = TinyModel::new();
    let limits = Limits {
        read_timeout: Duration::from_millis(200),
        max_request_bytes: 1000,
        ..Limits::default()
    };
    let server = Running::start(&m, limits);
    // Too long: answered after what came before, then closed without reading the rest.
    let mut client = server.connect();
    client.send(&json!({"id": 1, "text": "fine"}));
    client.send(&json!({"id": 2, "text": "x".repeat(5000)}));
    assert_eq!(client.answer().unwrap()["id"], 1);
    let too_long = client.answer().unwrap();
    assert!(too_long["error"]
        .as_str()
        .unwrap()
        .contains("longer than 1000 bytes"));
    assert!(client.answer().is_none(), "then closed");
    // Stalled halfway through a line.
    let mut client = server.connect();
    client.send(&json!({"id": 3, "text": "fine"}));
    client
        .stream
        .write_all(br#"{"id": 4, "text": "never fini"#)
        .unwrap();
    assert_eq!(client.answer().unwrap()["id"], 3);
    let stalled = client.answer().unwrap();
    assert!(
        stalled["error"].as_str().unwrap().contains("not finished"),
        "{stalled}"
    );
    assert!(client.answer().is_none(), "then closed");
    let stats = server.stop();
    assert_eq!(stats.timed_out, 1, "{stats}");
}

#[test]
fn a_stop_answers_what_was_read_even_with_a_client_that_does_not_read() {
    let m = TinyModel::new();
    let server = Running::start(&m, Limits::default());
    let mut deaf = server.connect();
    for id in 0..50 {
        deaf.send(&json!({"id": id, "texts": vec![text(id); 64]}));
    }
    let mut polite = server.connect();
    for id in 0..5 {
        assert_eq!(polite.ask(&json!({"id": id, "text": "ok"}))["id"], id);
    }
    polite.send(&json!({"id": "last", "text": "great acting"}));
    // Give the server the time to read it; a request not yet read when it stops is not answered.
    std::thread::sleep(Duration::from_millis(100));
    server.stop();
    // Whatever it got is whole lines; the request it read was answered (by a result or an error).
    let last = polite.answer().expect("the last request is answered");
    assert_eq!(last["id"], "last");
    assert!(polite.answer().is_none());
    // The client that did not read gets whole answers up to where the stop's grace ran out; only
    // its last line may be cut.
    let mut rest = Vec::new();
    deaf.stream.read_to_end(&mut rest).unwrap();
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    for line in &lines[..lines.len().saturating_sub(1)] {
        let a: Value = serde_json::from_slice(line).unwrap();
        assert!(a["results"].is_array() || a["error"].is_string(), "{a}");
    }
}

#[test]
fn the_socket_is_private_unless_asked() {
    use std::os::unix::fs::PermissionsExt;
    let m = TinyModel::new();
    for (mode, want) in [(Limits::default().socket_mode, 0o600), (0o660, 0o660)] {
        let limits = Limits {
            socket_mode: mode,
            ..Limits::default()
        };
        let server = Running::start(&m, limits);
        let got = std::fs::metadata(&server.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(got, want);
        server.stop();
    }
}
