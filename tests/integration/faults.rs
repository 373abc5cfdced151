//! Faults of the next hop through the real binary: a scripted SMTP server that refuses the
//! connection, answers 4xx or 5xx at each step of its dialogue, stalls past the delivery
//! budget or drops the connection in the middle of the message. For each: the client's
//! reply, the spool (`sealpost queue list`) and the DSNs. Also the bounce that must not
//! return decrypted mail (security rule 13), and control characters from the next hop in
//! what the admin reads (rule 17).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{start, Gpg, Raw, Sealpost, Server};
use super::upstream::free_port;

const LONG: Duration = Duration::from_secs(30);
/// The gateway's delivery budget in these tests, and a stall well past it.
const BUDGET: &str = "2s";
const STALL: Duration = Duration::from_secs(5);

/// A step of the next hop's side of the dialogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Greeting,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    /// The reply to the final dot.
    Dot,
}

#[derive(Clone, Debug)]
enum Fault {
    /// This reply line at this step; after a 421, or at the greeting, the hop closes.
    Reply(Step, &'static str),
    /// No reply at this step for this long, then the connection is closed.
    Stall(Step, Duration),
    /// The connection is closed after the first line of the message.
    CloseMidData,
}

/// A transaction the hop accepted.
#[derive(Debug, Clone)]
struct Received {
    sender: String,
    recipients: Vec<String>,
    data: Vec<u8>,
}

impl Received {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
struct Script {
    /// Faults for the next connections, one each (greeting, EHLO), then none.
    connections: VecDeque<Fault>,
    /// Per sender, one entry per transaction (MAIL): a fault, or `None` for none.
    senders: HashMap<String, VecDeque<Option<Fault>>>,
    /// Per recipient, the replies to its next RCPTs; accepted after.
    rcpts: HashMap<String, VecDeque<&'static str>>,
    received: Vec<Received>,
}

/// The scripted next hop: a strict SMTP server on 127.0.0.1 (a MAIL inside an open
/// transaction gets 503, as Postfix answers) that records what it accepts.
struct Hop {
    port: u16,
    script: Arc<Mutex<Script>>,
}

impl Hop {
    fn start() -> Hop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = Arc::new(Mutex::new(Script::default()));
        let s = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = session(stream, &s);
                });
            }
        });
        Hop { port, script }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn next_connections(&self, faults: &[Fault]) {
        self.script
            .lock()
            .unwrap()
            .connections
            .extend(faults.iter().cloned());
    }

    /// `sender`'s next transactions: one fault (or none) each, then none.
    fn transactions(&self, sender: &str, faults: &[Option<Fault>]) {
        self.script
            .lock()
            .unwrap()
            .senders
            .insert(sender.into(), faults.iter().cloned().collect());
    }

    fn rcpt_replies(&self, rcpt: &str, replies: &[&'static str]) {
        self.script
            .lock()
            .unwrap()
            .rcpts
            .insert(rcpt.into(), replies.iter().copied().collect());
    }

    /// How many of `sender`'s scripted transactions have not happened yet.
    fn scripted_left(&self, sender: &str) -> usize {
        self.script
            .lock()
            .unwrap()
            .senders
            .get(sender)
            .map_or(0, VecDeque::len)
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Messages accepted for `rcpt`.
    fn for_rcpt(&self, rcpt: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.recipients.iter().any(|a| a == rcpt))
            .collect()
    }

    /// DSNs accepted for `sender`: from `<>` to it.
    fn dsns_to(&self, sender: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.sender.is_empty() && r.recipients == [sender])
            .collect()
    }
}

/// Writes the fault's reply if it is for `step`: `Some(true)` when the connection is
/// to be closed, `Some(false)` when the session goes on, `None` when there is no fault.
fn faulted(fault: Option<&Fault>, step: Step, w: &mut TcpStream) -> std::io::Result<Option<bool>> {
    match fault {
        Some(Fault::Reply(s, line)) if *s == step => {
            w.write_all(format!("{line}\r\n").as_bytes())?;
            Ok(Some(step == Step::Greeting || line.starts_with("421")))
        }
        Some(Fault::Stall(s, d)) if *s == step => {
            std::thread::sleep(*d);
            Ok(Some(true))
        }
        _ => Ok(None),
    }
}

fn session(stream: TcpStream, script: &Mutex<Script>) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let conn = script.lock().unwrap().connections.pop_front();
    if faulted(conn.as_ref(), Step::Greeting, &mut w)?.is_some() {
        return Ok(());
    }
    w.write_all(b"220 hop.test ESMTP\r\n")?;
    let mut tx: Option<Fault> = None;
    let mut sender: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        // The fault that applies to this command: the connection's at EHLO, the
        // transaction's at MAIL (which picks it), RCPT and DATA.
        let (step, fault) = match verb.as_str() {
            "EHLO" | "HELO" => (Step::Ehlo, conn.as_ref()),
            "MAIL" if sender.is_some() => {
                w.write_all(b"503 5.5.1 Error: nested MAIL command\r\n")?;
                continue;
            }
            "MAIL" => {
                tx = script
                    .lock()
                    .unwrap()
                    .senders
                    .get_mut(&between(&line))
                    .and_then(VecDeque::pop_front)
                    .flatten();
                (Step::Mail, tx.as_ref())
            }
            "RCPT" => (Step::Rcpt, tx.as_ref()),
            "DATA" => (Step::Data, tx.as_ref()),
            _ => (Step::Greeting, None),
        };
        match faulted(fault, step, &mut w)? {
            Some(true) => return Ok(()),
            Some(false) => continue,
            None => {}
        }
        match verb.as_str() {
            "EHLO" => w.write_all(
                b"250-hop.test\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n250 ENHANCEDSTATUSCODES\r\n",
            )?,
            "MAIL" => {
                sender = Some(between(&line));
                w.write_all(b"250 2.1.0 Ok\r\n")?;
            }
            "RCPT" if sender.is_none() => w.write_all(b"503 5.5.1 Error: need MAIL command\r\n")?,
            "RCPT" => {
                let to = between(&line);
                let scripted = script
                    .lock()
                    .unwrap()
                    .rcpts
                    .get_mut(&to)
                    .and_then(VecDeque::pop_front);
                match scripted {
                    Some(reply) => w.write_all(format!("{reply}\r\n").as_bytes())?,
                    None => {
                        rcpts.push(to);
                        w.write_all(b"250 2.1.5 Ok\r\n")?;
                    }
                }
            }
            "DATA" if rcpts.is_empty() => w.write_all(b"554 5.5.1 Error: no valid recipients\r\n")?,
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l)? == 0 {
                        return Ok(());
                    }
                    if matches!(tx, Some(Fault::CloseMidData)) {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                }
                // The final dot ends the transaction, whatever the reply.
                let from = sender.take().unwrap_or_default();
                let to = std::mem::take(&mut rcpts);
                match faulted(tx.as_ref(), Step::Dot, &mut w)? {
                    Some(true) => return Ok(()),
                    Some(false) => continue,
                    None => {}
                }
                script.lock().unwrap().received.push(Received {
                    sender: from,
                    recipients: to,
                    data,
                });
                w.write_all(b"250 2.0.0 Ok: queued\r\n")?;
            }
            "RSET" => {
                sender = None;
                rcpts.clear();
                w.write_all(b"250 2.0.0 Ok\r\n")?;
            }
            "NOOP" => w.write_all(b"250 2.0.0 Ok\r\n")?,
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"502 5.5.2 Error: command not recognized\r\n")?,
        }
    }
}

fn between(line: &str) -> String {
    match (line.find('<'), line.rfind('>')) {
        (Some(i), Some(j)) if j > i => line[i + 1..j].to_lowercase(),
        _ => String::new(),
    }
}

/// `serve` with `config`, its log (`sealpost=info`) written to a file in the data
/// directory's parent, so that a test can read what the admin would.
fn serve_logged(s: &Sealpost, config: &str) -> (Server, std::path::PathBuf) {
    let log = s.dir.path().join("serve.log");
    let mut cmd = s.serve_command(config);
    cmd.env("RUST_LOG", "warn,sealpost=info")
        // No colours: any ESC in the log then comes from what was logged.
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).expect("log file"));
    (start(cmd), log)
}

/// One outbound listener without TLS, `hop` upstream, a short budget and retry delay.
fn outbound_config(hop: &str) -> String {
    format!(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"{hop}\"\ntls = \"none\"\n\n\
         [delivery]\nbudget = \"{BUDGET}\"\nretry = \"1s\"\nlifetime = \"1h\"\n"
    )
}

/// Sends one message from `from` to `rcpts` over a fresh session; the reply to the final
/// dot, and how long it took.
fn send(port: u16, mail: &str, rcpts: &[&str], subject: &str) -> (String, Duration) {
    let mut c = Raw::connect(port);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let r = c.cmd(mail);
    assert!(r.starts_with("250"), "{mail}: {r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("250"), "RCPT {rcpt}: {r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let start = Instant::now();
    let reply = c.cmd(&format!(
        "From: <sender@client.test>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n."
    ));
    let took = start.elapsed();
    // The session goes on after any reply to the final dot.
    assert!(c.cmd("NOOP").starts_with("250"), "after {reply}");
    (reply, took)
}

/// `queue list` lines about `sender`'s copies and the DSNs to it.
fn spooled(s: &Sealpost, sender: &str) -> Vec<String> {
    let listed = s.ok(&["queue", "list"]);
    let (from, to) = (format!("from <{sender}>"), format!("to {sender}  "));
    listed
        .lines()
        .filter(|l| l.contains(&from) || l.contains(&to))
        .map(str::to_string)
        .collect()
}

/// Polls `f` every 200 ms (each poll may run the CLI; many cases poll at once) until it
/// returns `Some`, or panics after [`LONG`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until nothing of `sender`'s is spooled, DSNs to it included.
fn drained(s: &Sealpost, sender: &str) {
    wait_for(&format!("no spooled copy from or to {sender}"), || {
        spooled(s, sender).is_empty().then_some(())
    });
}

/// What a case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The client gets this reply code (with the hop's own words when `worded`);
    /// nothing is spooled, sent or reported.
    HandedBack { code: u16, worded: bool },
    /// The client gets 250; the copy is spooled and delivered once later.
    SpooledThenDelivered,
    /// The client gets 250; the spooled recipient fails for good: exactly one DSN.
    SpooledThenReported,
}

/// The faults at MAIL, RCPT, DATA and the final dot, each as 4xx and as 5xx.
fn step_replies() -> Vec<(&'static str, Fault, bool)> {
    let mut out = Vec::new();
    for (name, step) in [
        ("mail", Step::Mail),
        ("rcpt", Step::Rcpt),
        ("data", Step::Data),
        ("dot", Step::Dot),
    ] {
        for (line, temporary) in [
            ("451 4.3.0 scripted temporary fault", true),
            ("554 5.7.1 scripted permanent fault", false),
        ] {
            out.push((name, Fault::Reply(step, line), temporary));
        }
    }
    out
}

#[test]
fn a_fault_at_each_step_gets_the_right_reply_spool_and_dsn() {
    let hop = Hop::start();
    let s = Sealpost::new();
    let gw = s.serve(&outbound_config(&hop.address()), &[]);
    let port = gw.port();

    // Each case has a sender of its own, so that all run at once on one gateway.
    let mut cases: Vec<(String, Vec<Option<Fault>>, Expect)> = Vec::new();
    for (step, fault, temporary) in step_replies() {
        let code = if temporary { 451 } else { 554 };
        // The first transaction fails: the client is told, nothing is kept.
        cases.push((
            format!("{step}-{code}-first"),
            vec![Some(fault.clone())],
            Expect::HandedBack { code, worded: true },
        ));
        // A retry from the spool fails: kept and delivered later, or reported once.
        cases.push((
            format!("{step}-{code}-retry"),
            vec![None, Some(fault)],
            if temporary {
                Expect::SpooledThenDelivered
            } else {
                Expect::SpooledThenReported
            },
        ));
    }
    cases.push((
        "mail-421-first".into(),
        vec![Some(Fault::Reply(
            Step::Mail,
            "421 4.3.2 scripted shutting down",
        ))],
        Expect::HandedBack {
            code: 451,
            worded: true,
        },
    ));
    cases.push((
        "close-mid-data-first".into(),
        vec![Some(Fault::CloseMidData)],
        Expect::HandedBack {
            code: 451,
            worded: false,
        },
    ));
    cases.push((
        "close-mid-data-retry".into(),
        vec![None, Some(Fault::CloseMidData)],
        Expect::SpooledThenDelivered,
    ));
    for (name, step) in [
        ("mail", Step::Mail),
        ("rcpt", Step::Rcpt),
        ("data", Step::Data),
        ("dot", Step::Dot),
    ] {
        cases.push((
            format!("stall-{name}"),
            vec![Some(Fault::Stall(step, STALL))],
            Expect::SpooledThenDelivered,
        ));
    }

    std::thread::scope(|scope| {
        for (name, faults, expect) in &cases {
            let (hop, s) = (&hop, &s);
            scope.spawn(move || run_case(hop, s, port, name, faults, *expect));
        }
    });
}

/// One case of the matrix: `faults` are the hop's faults for the sender's transactions,
/// and each of them must have been met.
fn run_case(
    hop: &Hop,
    s: &Sealpost,
    port: u16,
    name: &str,
    faults: &[Option<Fault>],
    expect: Expect,
) {
    let sender = format!("{name}@client.test");
    hop.transactions(&sender, faults);
    run_expected(hop, s, port, name, faults, expect);
    assert_eq!(hop.scripted_left(&sender), 0, "{name}: every fault was met");
}

fn run_expected(
    hop: &Hop,
    s: &Sealpost,
    port: u16,
    name: &str,
    faults: &[Option<Fault>],
    expect: Expect,
) {
    let sender = format!("{name}@client.test");
    let now = format!("now-{name}@example.net");
    let later = format!("later-{name}@example.net");
    let mail = format!("MAIL FROM:<{sender}>");
    match expect {
        Expect::HandedBack { code, worded } => {
            let (reply, _) = send(port, &mail, &[&now], name);
            assert!(reply.starts_with(&format!("{code} ")), "{name}: {reply}");
            assert_eq!(reply.contains("scripted"), worded, "{name}: {reply}");
            assert!(spooled(s, &sender).is_empty(), "{name}: nothing spooled");
            std::thread::sleep(Duration::from_millis(500));
            assert!(hop.for_rcpt(&now).is_empty(), "{name}: nothing sent");
            assert!(hop.dsns_to(&sender).is_empty(), "{name}: no DSN");
        }
        Expect::SpooledThenDelivered if faults.len() == 1 => {
            // A stall in the first transaction: the budget runs out, the copy is kept.
            let (reply, took) = send(port, &mail, &[&now], name);
            assert!(reply.starts_with("250 2.0.0 Accepted"), "{name}: {reply}");
            assert!(
                took < STALL,
                "{name}: answered at the budget, not the stall: {took:?}"
            );
            wait_for(&format!("{name}: delivered"), || {
                (!hop.for_rcpt(&now).is_empty()).then_some(())
            });
            drained(s, &sender);
            assert_eq!(hop.for_rcpt(&now).len(), 1, "{name}: delivered once");
            assert!(hop.dsns_to(&sender).is_empty(), "{name}: no DSN");
        }
        Expect::SpooledThenDelivered | Expect::SpooledThenReported => {
            // The first transaction delivers `now` and defers `later`: 250, `later` spooled.
            hop.rcpt_replies(&later, &["451 4.2.0 scripted: try later"]);
            let (reply, _) = send(port, &mail, &[&now, &later], name);
            assert!(reply.starts_with("250 2.0.0 Accepted"), "{name}: {reply}");
            drained(s, &sender);
            assert_eq!(hop.for_rcpt(&now).len(), 1, "{name}: delivered once");
            let got = hop.for_rcpt(&later).len();
            let dsns = hop.dsns_to(&sender);
            if expect == Expect::SpooledThenDelivered {
                assert_eq!(got, 1, "{name}: delivered once after the fault");
                assert!(dsns.is_empty(), "{name}: no DSN");
            } else {
                assert_eq!(got, 0, "{name}: never delivered");
                assert_eq!(dsns.len(), 1, "{name}: exactly one DSN");
                let text = dsns[0].text();
                assert!(
                    text.contains(&format!("Final-Recipient: rfc822; {later}")),
                    "{name}: {text}"
                );
                assert!(text.contains("scripted permanent fault"), "{name}: {text}");
                assert!(!text.contains(&format!("Final-Recipient: rfc822; {now}")));
            }
        }
    }
}

#[test]
fn connection_faults_refused_greeting_ehlo_and_a_stalled_greeting() {
    // Nothing listens: 451 4.4.1, nothing kept.
    let s = Sealpost::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = s.serve(&outbound_config(&dead), &[]);
    let (reply, _) = send(
        gw.port(),
        "MAIL FROM:<a@client.test>",
        &["b@example.net"],
        "refused",
    );
    assert!(reply.starts_with("451 4.4.1"), "{reply}");
    assert!(s.ok(&["queue", "list"]).is_empty());
    drop(gw);

    let hop = Hop::start();
    let s = Sealpost::new();
    // `serve` asks the hop for its capabilities before it listens; the faults are for
    // the connections after that.
    let gw = s.serve(&outbound_config(&hop.address()), &[]);
    let port = gw.port();
    for (fault, code) in [
        (Fault::Reply(Step::Greeting, "421 4.3.2 scripted busy"), 451),
        (
            Fault::Reply(Step::Greeting, "554 5.7.1 scripted no service"),
            554,
        ),
        (
            Fault::Reply(Step::Ehlo, "451 4.3.0 scripted EHLO fault"),
            451,
        ),
        (
            Fault::Reply(Step::Ehlo, "550 5.7.1 scripted EHLO refused"),
            550,
        ),
    ] {
        hop.next_connections(std::slice::from_ref(&fault));
        let (reply, _) = send(
            port,
            "MAIL FROM:<a@client.test>",
            &["b@example.net"],
            "conn",
        );
        assert!(reply.starts_with(&format!("{code} ")), "{fault:?}: {reply}");
        assert!(reply.contains("scripted"), "{fault:?}: {reply}");
        assert!(s.ok(&["queue", "list"]).is_empty(), "{fault:?}");
    }
    assert!(hop.received().is_empty());

    // A greeting that never comes: the budget runs out, the copy is kept and delivered
    // by the worker on its next connection.
    hop.next_connections(&[Fault::Stall(Step::Greeting, STALL)]);
    let (reply, took) = send(
        port,
        "MAIL FROM:<a@client.test>",
        &["slow@example.net"],
        "slow",
    );
    assert!(reply.starts_with("250 2.0.0 Accepted"), "{reply}");
    assert!(took < STALL, "{took:?}");
    wait_for("an empty spool", || {
        s.ok(&["queue", "list"]).is_empty().then_some(())
    });
    let got = hop.for_rcpt("slow@example.net");
    assert_eq!(got.len(), 1, "delivered once");
    assert!(hop.dsns_to("a@client.test").is_empty());
}

#[test]
fn a_refused_data_leaves_no_open_transaction_on_a_reused_connection() {
    let hop = Hop::start();
    let s = Sealpost::new();
    let gw = s.serve(&outbound_config(&hop.address()), &[]);
    hop.transactions(
        "first@client.test",
        &[Some(Fault::Reply(
            Step::Data,
            "451 4.3.0 scripted DATA fault",
        ))],
    );
    let (reply, _) = send(
        gw.port(),
        "MAIL FROM:<first@client.test>",
        &["b@example.net"],
        "one",
    );
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    // The next message goes over the connection the gateway kept: the refused DATA left
    // the hop's transaction open, and a MAIL in it would get 503 (a permanent failure).
    let (reply, _) = send(
        gw.port(),
        "MAIL FROM:<second@client.test>",
        &["c@example.net"],
        "two",
    );
    assert!(reply.starts_with("250 2.0.0 Delivered"), "{reply}");
    assert_eq!(hop.for_rcpt("c@example.net").len(), 1);
}

#[test]
fn control_characters_from_the_hop_reach_neither_queue_list_nor_the_log_raw() {
    let hop = Hop::start();
    let s = Sealpost::new();
    // Retried in an hour: the entry stays for `queue list` to show.
    let config = outbound_config(&hop.address()).replace("retry = \"1s\"", "retry = \"1h\"");
    let (gw, log) = serve_logged(&s, &config);
    let hostile = "451 4.2.0 \x1b[31mred\x1b[0m \x1b]0;title\x07 scripted";
    hop.rcpt_replies("later@example.net", &[hostile]);
    let (reply, _) = send(
        gw.port(),
        "MAIL FROM:<a@client.test>",
        &["now@example.net", "later@example.net"],
        "escapes",
    );
    assert!(reply.starts_with("250 2.0.0 Accepted"), "{reply}");
    let shown = "451 4.2.0 \\x1b[31mred\\x1b[0m \\x1b]0;title\\x07 scripted";
    let listed = s.ok(&["queue", "list"]);
    assert!(
        listed.contains(&format!("last error: {shown}")),
        "{listed:?}"
    );
    assert!(!listed.contains(['\x1b', '\x07']), "{listed:?}");
    let text = wait_for("the outcome for later@ in the log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains(shown).then_some(text)
    });
    assert!(!text.contains(['\x1b', '\x07']), "{text:?}");
}

/// An RFC 3156 message from Mallory to Bob around `armored`, with a marker field.
fn pgp_mime(armored: &str) -> String {
    format!(
        "From: Mallory <mallory@evil.example>\nTo: bob@example.org\nSubject: [...]\n\
         X-Test-Case: replayed ciphertext\nMIME-Version: 1.0\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\n\n\
         --b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
         --b\nContent-Type: application/octet-stream\n\n{armored}\n--b--\n"
    )
    .replace('\n', "\r\n")
}

#[test]
fn a_bounce_never_returns_what_was_decrypted() {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    // A ciphertext for Bob, as an attacker would have captured it.
    let gpg = Gpg::new();
    gpg.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );
    let payload = "Subject: the vault plan\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                   The vault code is 4711-SECRET.\r\n";
    let armored = gpg.ok_with_input(
        &["--armor", "--encrypt", "-r", "bob@example.org"],
        payload.as_bytes(),
    );
    let message = pgp_mime(&String::from_utf8(armored).unwrap());
    // The mailbox server takes Bob and refuses the others; DSNs leave through the same
    // server as the upstream.
    let hop = Hop::start();
    let refused = "550 5.1.1 scripted: no such user";
    hop.rcpt_replies("gone@example.org", &[refused, refused]);
    hop.rcpt_replies(
        "moved@example.org",
        &["451 4.2.0 scripted: try later", refused],
    );
    let config = format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"{hop}\"\nlocal_domains = [\"example.org\"]\n\
         recipients = \"any\"\n\n\
         [upstream]\naddress = \"{hop}\"\ntls = \"none\"\n\n\
         [delivery]\nretry = \"1s\"\n",
        hop = hop.address()
    );
    let gw = s.serve(&config, &[]);
    let cases = [
        // Refused within the transaction, the whole message asked back.
        ("mallory1@evil.example", " RET=FULL", "gone@example.org"),
        // The header asked back.
        ("mallory2@evil.example", "", "gone@example.org"),
        // Refused on a retry from the spool, by the worker.
        ("mallory3@evil.example", " RET=FULL", "moved@example.org"),
    ];
    for (sender, ret, other) in cases {
        let mut c = Raw::connect(gw.port());
        assert!(c.cmd("EHLO evil.example").starts_with("250"));
        assert!(c
            .cmd(&format!("MAIL FROM:<{sender}>{ret}"))
            .starts_with("250"));
        // Bob first: his decrypted copy is the transaction's first.
        for rcpt in ["bob@example.org", other] {
            assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        }
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(message.as_bytes());
        let reply = c.cmd(".");
        assert!(reply.starts_with("250 2.0.0 Accepted"), "{sender}: {reply}");

        let dsn = wait_for(&format!("the DSN to {sender}"), || {
            hop.dsns_to(sender).pop()
        });
        let text = dsn.text();
        assert!(
            text.contains(&format!("Final-Recipient: rfc822; {other}")),
            "{text}"
        );
        assert!(
            text.contains("X-Test-Case: replayed ciphertext"),
            "the received header: {text}"
        );
        assert!(text.contains("text/rfc822-headers"), "{text}");
        for leak in ["4711", "vault", "X-Sealpost", "message/rfc822"] {
            assert!(!text.contains(leak), "{sender}: {leak} in the DSN: {text}");
        }
    }
    // Bob's copies were decrypted: what the DSNs must not carry was there to be leaked.
    let bob = hop.for_rcpt("bob@example.org");
    assert_eq!(bob.len(), 3);
    assert!(bob.iter().all(|m| m.text().contains("4711-SECRET")));
    std::thread::sleep(Duration::from_secs(1));
    for (sender, _, _) in cases {
        assert_eq!(hop.dsns_to(sender).len(), 1, "one DSN to {sender}");
    }
}
