//! Group health end to end (issue 16), with the daemon as its own process and scripted
//! NapCat peers over real WebSockets: joins, leaves and messages of a QQ group seen by two
//! bot accounts are counted once each, bots are not counted, a copy relayed into the group is
//! counted as relayed in; `qunbridge stats` prints the figures (JSON, CSV with a BOM), they
//! survive `kill -9` and a restart, and `/metrics` shows them by alias without any id.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use qunbridge_tests::onebot11_peer::{
    group_message, member_decrease, member_increase, OneBot11Peer,
};
use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::{free_port, post_message, qunbridge_binary, Broker, PATIENCE};
use serde_json::{json, Value};

/// The first bot's QQ number.
const BOT: i64 = 2854196310;
/// The second bot's QQ number (another configured bot account in the same group).
const SECOND_BOT: i64 = 2854196311;
/// The linked QQ group.
const GROUP: i64 = 735021844;
/// The members who speak: (QQ number, card, messages said).
const MEMBERS: [(i64, &str, usize); 3] = [
    (1437420188, "Alice | Ops", 10),
    (1500600700, "", 10),
    (1600700800, "", 8),
];

/// Two bot accounts in QQ group 735021844 (alias `fans-qq`), linked with `api` group `a`.
fn config(broker: &Broker, first: &str, second: &str, api: SocketAddr) -> String {
    format!(
        r#"{broker}
[accounts.qq-a]
platform = "qq"
url = "{first}"
self_id = "{BOT}"

[accounts.qq-b]
platform = "qq"
url = "{second}"
self_id = "{SECOND_BOT}"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "fans"
groups = ["qq-a:{GROUP}", "qq-b:{GROUP}", "hub:a"]

[stats.aliases]
"qq-a:{GROUP}" = "fans-qq"
"#,
        broker = broker.toml()
    )
}

/// The current Unix second.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A text message of `user` in the group at `time`, as bot `self_id` reports it.
fn said(self_id: i64, message_id: i64, user: i64, time: i64, text: &str) -> Value {
    let mut event = group_message(
        GROUP,
        user,
        message_id,
        "",
        "member",
        json!([{"type": "text", "data": {"text": text}}]),
    );
    event["self_id"] = json!(self_id);
    event["time"] = json!(time);
    event
}

/// `qunbridge stats` against the daemon's admin endpoint with `args`; its exit code and
/// output.
fn stats_cli(admin: SocketAddr, args: &[&str]) -> (i32, Vec<u8>) {
    let output = Command::new(qunbridge_binary())
        .arg("stats")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .output()
        .expect("qunbridge stats runs");
    (output.status.code().unwrap_or(-1), output.stdout)
}

/// Today's row of `fans-qq` as `qunbridge stats --format json` prints it.
fn todays_row(admin: SocketAddr) -> (Value, Value) {
    let (code, out) = stats_cli(admin, &["--format", "json", "--group", "fans-qq"]);
    assert_eq!(code, 0, "qunbridge stats exits 0");
    let report: Value = serde_json::from_slice(&out).expect("JSON report");
    let group = report["groups"][0].clone();
    assert_eq!(group["alias"], "fans-qq");
    let today = group["periods"]
        .as_array()
        .and_then(|periods| periods.last())
        .cloned()
        .unwrap_or(Value::Null);
    (group["figures"].clone(), today)
}

/// Polls the report until today's row satisfies `done`.
async fn wait_for_row(admin: SocketAddr, done: impl Fn(&Value) -> bool) -> (Value, Value) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (figures, row) = todays_row(admin);
        if done(&row) {
            return (figures, row);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "today's row never settled: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns at once unless the day in +08:00 (the stats default) ends within `span`; then
/// waits until the next day has begun. A test that reads today's row more than once must not
/// straddle midnight: a read after it finds the new day's row.
async fn clear_of_midnight(span: Duration) {
    let offset = 8 * 3600;
    let left = 86_400 - (now_secs() + offset).rem_euclid(86_400);
    if left <= span.as_secs() as i64 {
        tokio::time::sleep(Duration::from_secs(left.unsigned_abs() + 1)).await;
    }
}

/// Pushes `event` to both bots, as both see everything said in the group.
fn to_both(first: &OneBot11Peer, second: &OneBot11Peer, event: &Value) {
    first.push_event(event.clone());
    let mut copy = event.clone();
    copy["self_id"] = json!(SECOND_BOT);
    second.push_event(copy);
}

async fn two_bots_count_once(broker: Broker) {
    // It reads today's row before and after a restart.
    clear_of_midnight(Duration::from_secs(180)).await;
    let (first, first_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (second, second_url) = OneBot11Peer::serve(SECOND_BOT, None, 0).await;
    // The member list NapCat would answer: `get_group_list` counts three members.
    let list: Vec<(i64, &str, &str)> = MEMBERS
        .iter()
        .map(|(id, card, _)| (*id, *card, "nick"))
        .collect();
    first.set_member_list(GROUP, &list);
    second.set_member_list(GROUP, &list);
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon =
        DaemonProcess::start(dir.path(), &config(&broker, &first_url, &second_url, api)).await;
    first.wait_connections(1).await;
    second.wait_connections(1).await;
    // Both accounts asked the group's member count at connect (answered with three) before
    // the list changes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while first.untaken("get_group_info").is_empty() || second.untaken("get_group_info").is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "no get_group_info");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Joins and leaves, each reported by both bots: one approved join, a member who left, one
    // kicked, a disband (NapCat) and a sub_type nobody documented.
    first.add_member(GROUP, 1700800900, "新人", "newbie");
    for event in [
        member_increase(GROUP, 1700800900, 0, "approve"),
        member_decrease(GROUP, 1500600700, 1500600700, "leave"),
        member_decrease(GROUP, 1600700800, 4242, "kick"),
        member_decrease(GROUP, 1800900100, 0, "disband"),
        member_decrease(GROUP, 1900100200, 0, "lift"),
    ] {
        to_both(&first, &second, &event);
    }

    // 28 messages from three members (the first five reported by both bots), one from the
    // other configured bot account, one the bot sent itself.
    let time = now_secs();
    let mut id = 100;
    for (user, _, count) in MEMBERS {
        for n in 0..count {
            id += 1;
            let event = said(BOT, id, user, time, &format!("m{user}-{n}"));
            if id <= 105 {
                to_both(&first, &second, &event);
            } else {
                first.push_event(event);
            }
        }
    }
    first.push_event(said(BOT, 900, SECOND_BOT, time, "relayed by the other bot"));
    let mut own = said(BOT, 901, BOT, time, "the bot's own");
    own["post_type"] = json!("message_sent");
    first.push_event(own);

    // One message relayed into the QQ group from the `api` group.
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ed"}, "text": "hello qq"}),
        None,
    )
    .await;
    assert_eq!(status, 202);

    let settled = |row: &Value| {
        row["messages"] == 28
            && row["leaves"] == 4
            && row["joins"] == 1
            && row["relayed_in"] == 1
            && row["member_count"] == 3
    };
    let (figures, row) = wait_for_row(daemon.admin, settled).await;
    assert_eq!(row["active_senders"], 3, "three members spoke: {row}");
    assert_eq!(row["joins_by_how"], json!({"approve": 1}));
    assert_eq!(
        row["leaves_by_how"],
        json!({"leave": 1, "kick": 1, "disband": 1, "unknown": 1}),
        "every how counted under its own name: {row}"
    );
    assert_eq!(row["kicks"], 1);
    assert_eq!(figures["active_1d"], 3);
    assert_eq!(figures["member_count"], 3);
    assert_eq!(figures["tiers"]["silent"], 0);
    // Give the store a moment past the report (the counts of the last messages are already
    // in it: the report read them), then check that nothing more trickles in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, again) = todays_row(daemon.admin);
    assert_eq!(again["messages"], 28, "no message counted twice: {again}");
    assert_eq!(again["leaves"], 4);

    // CSV with the BOM and the documented header.
    let (code, csv) = stats_cli(daemon.admin, &["--format", "csv", "--bom"]);
    assert_eq!(code, 0);
    assert!(
        csv.starts_with(&[0xEF, 0xBB, 0xBF]),
        "CSV starts with the BOM"
    );
    let csv = String::from_utf8(csv).expect("UTF-8 CSV");
    let mut lines = csv.trim_start_matches('\u{feff}').lines();
    assert_eq!(
        lines.next(),
        Some("period,alias,link,platform,account,group,messages,active_senders,joins,leaves,kicks,relayed_in,member_count,join_rate,churn_rate,coverage")
    );
    assert!(
        csv.lines()
            .any(|line| line.contains(",fans-qq,fans,qq,qq-a,735021844,28,3,1,4,1,1,3,")),
        "today's row of fans-qq in:\n{csv}"
    );

    // `qunbridge status` shows a line for the group.
    let status = Command::new(qunbridge_binary())
        .args(["status", "--admin", &daemon.admin.to_string()])
        .output()
        .expect("qunbridge status runs");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status
            .lines()
            .any(|line| line.starts_with("fans-qq") && line.contains(" 28 ")),
        "a status line for fans-qq with today's 28 messages in:\n{status}"
    );

    // Metrics: by alias, never an id; the bot's removal counted once.
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("qunbridge_group_messages_total{group=\"fans-qq\"} 28"),
        "{metrics}"
    );
    assert!(metrics
        .contains("qunbridge_group_members_joined_total{group=\"fans-qq\",how=\"approve\"} 1"));
    assert!(
        metrics.contains("qunbridge_group_members_left_total{group=\"fans-qq\",how=\"unknown\"} 1")
    );
    // The disband was reported by both bots: counted once, under the bot that reported it
    // first.
    let removed = qunbridge_tests::metrics::counter(
        &metrics,
        "qunbridge_group_bot_removed_total{account=\"qq-a\"}",
    ) + qunbridge_tests::metrics::counter(
        &metrics,
        "qunbridge_group_bot_removed_total{account=\"qq-b\"}",
    );
    assert_eq!(removed, 1.0, "{metrics}");
    for id in [
        "735021844",
        "1437420188",
        "1500600700",
        "1600700800",
        "1700800900",
        "2854196310",
    ] {
        assert!(!metrics.contains(id), "/metrics names {id}");
    }

    // kill -9 and a restart on the same state directory: the same figures, and the gauges
    // back at once.
    daemon.restart().await;
    first.wait_connections(2).await;
    let (figures_after, row_after) = todays_row(daemon.admin);
    assert_eq!(row_after["messages"], 28, "{row_after}");
    assert_eq!(row_after["active_senders"], 3);
    assert_eq!(row_after["leaves"], 4);
    assert_eq!(figures_after["active_1d"], figures["active_1d"]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = daemon.metrics().await;
        if metrics.contains("qunbridge_group_active_senders{group=\"fans-qq\",window=\"1d\"} 3") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges not back: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
}

mod two_bots_count_once {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        two_bots_count_once(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        two_bots_count_once(Broker::mosquitto().await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_64_and_an_unreachable_daemon_exits_1() {
    let port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let (code, _) = stats_cli(admin, &["--since", "yesterday"]);
    assert_eq!(code, 64);
    let (code, _) = stats_cli(admin, &["--by", "month"]);
    assert_eq!(code, 64);
    let (code, _) = stats_cli(admin, &["--since", "2026-12-02", "--until", "2026-12-01"]);
    assert_eq!(code, 64);
    let (code, _) = stats_cli(admin, &[]);
    assert_eq!(code, 1, "nothing listens on {admin}");
}

/// QQ group 735021844 and a WeChat group in a link that announces joins.
fn notices_config(broker: &Broker, qq: &str, wx: &str) -> String {
    format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq}"
self_id = "{BOT}"

[accounts.wx]
platform = "wechat"
url = "{wx}"

[[links]]
name = "fans"
groups = ["qq:{GROUP}", "wx:{WECHAT_GROUP}"]
notices = "joins"
"#,
        broker = broker.toml()
    )
}

/// The linked WeChat group.
const WECHAT_GROUP: &str = "20993411775@chatroom";

/// The text of a `send_message` action.
fn sent_text(send: &Value) -> String {
    send["params"]["message"][0]["data"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_is_announced_in_the_linked_wechat_group_and_a_leave_is_not() {
    use qunbridge_tests::onebot12_peer::{Behaviour, OneBot12Peer};
    let broker = Broker::embedded();
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(dir.path(), &notices_config(&broker, &qq_url, &wx_url)).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    qq.add_member(GROUP, 1234567890, "小明", "xiaoming");
    qq.push_event(member_increase(GROUP, 1234567890, 0, "invite"));
    let send = wx.next_action("send_message").await;
    assert_eq!(send["params"]["group_id"], WECHAT_GROUP);
    assert_eq!(sent_text(&send), "[QQ] 小明 加入了群");

    // A leave is not announced with `notices = "joins"`, nor is the bot's own removal; a
    // member whose name cannot be found shows as 新成员, never as a number.
    qq.remove_member(GROUP, 1234567890);
    qq.push_event(member_decrease(GROUP, 1234567890, 1234567890, "leave"));
    qq.push_event(member_decrease(GROUP, BOT, 0, "kick_me"));
    qq.push_event(member_increase(GROUP, 1987654321, 0, "approve"));
    let send = wx.next_action("send_message").await;
    assert_eq!(
        sent_text(&send),
        "[QQ] 新成员 加入了群",
        "the next send is the second join: the leave and the bot's removal were not announced"
    );
    assert!(!sent_text(&send).contains("1987654321"));

    // Bad notices are counted as unknown input, and the connection keeps going.
    let mut missing_group = member_increase(GROUP, 1111111111, 0, "approve");
    if let Some(object) = missing_group.as_object_mut() {
        object.remove("group_id");
    }
    let mut bad_user = member_increase(GROUP, 1, 0, "approve");
    bad_user["user_id"] = json!("not-a-number");
    let mut unknown_type = member_increase(GROUP, 1, 0, "approve");
    unknown_type["notice_type"] = json!("group_hologram");
    for event in [missing_group, bad_user, unknown_type] {
        qq.push_event(event);
    }
    qq.add_member(GROUP, 2222222222, "后来者", "later");
    qq.push_event(member_increase(GROUP, 2222222222, 0, "approve"));
    let send = wx.next_action("send_message").await;
    assert_eq!(sent_text(&send), "[QQ] 后来者 加入了群");
    let metrics = daemon.metrics().await;
    assert_eq!(
        qunbridge_tests::metrics::counter(
            &metrics,
            "qunbridge_unknown_input_total{platform=\"qq\",kind=\"notice\"}"
        ),
        3.0,
        "{metrics}"
    );
    for id in [
        WECHAT_GROUP,
        "20993411775",
        "wxid_",
        "735021844",
        "1234567890",
    ] {
        assert!(!metrics.contains(id), "/metrics names {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_renames_an_alias_and_changes_notices_and_keeps_the_history() {
    use qunbridge_tests::onebot12_peer::{Behaviour, OneBot12Peer};
    let broker = Broker::embedded();
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = notices_config(&broker, &qq_url, &wx_url);
    let mut daemon = DaemonProcess::start(dir.path(), &first).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    // Before the reload: the default alias, joins announced only.
    qq.add_member(GROUP, 1234567890, "小明", "xiaoming");
    qq.push_event(member_increase(GROUP, 1234567890, 0, "invite"));
    let send = wx.next_action("send_message").await;
    assert_eq!(sent_text(&send), "[QQ] 小明 加入了群");

    // SIGHUP with the group renamed, leaves announced too, a new leave format.
    let second = first.replace(r#"notices = "joins""#, r#"notices = "all""#)
        + &format!(
            r#"
[stats]
leave_format = "{{name}} 离开了 {{link}}"

[stats.aliases]
"qq:{GROUP}" = "fans-qq"
"#
        );
    daemon.reload_with(&second).await;
    qq.push_event(member_decrease(GROUP, 1234567890, 1234567890, "leave"));
    let send = wx.next_action("send_message").await;
    assert_eq!(sent_text(&send), "小明 离开了 fans");

    // The join counted under the old alias is the renamed group's: history is keyed by
    // account and group, never by alias.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (code, out) = stats_cli(daemon.admin, &["--format", "json", "--group", "fans-qq"]);
        assert_eq!(code, 0);
        let report: Value = serde_json::from_slice(&out).expect("JSON report");
        let today = report["groups"][0]["periods"]
            .as_array()
            .and_then(|periods| periods.last())
            .cloned()
            .unwrap_or(Value::Null);
        if today["leaves"] == 1 {
            assert_eq!(today["joins"], 1, "{today}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains(r#"qunbridge_group_info{group="fans-qq",link="fans",platform="qq""#),
        "{metrics}"
    );
    assert_eq!(
        qunbridge_tests::metrics::counter(
            &metrics,
            r#"qunbridge_group_members_left_total{group="fans-qq",how="leave"}"#
        ),
        1.0,
        "{metrics}"
    );
    let info: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("qunbridge_group_info{") && line.contains("\"qq#1\""))
        .collect();
    assert!(
        info.iter().all(|line| line.ends_with(" 0")),
        "the old alias no longer says it is a linked group: {info:?}"
    );
}

/// Three QQ groups, each linked with its own `api` group, default aliases `qq#1`..`qq#3`.
fn weeks_config(broker: &Broker, qq: &str, api: SocketAddr) -> String {
    let mut config = format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq}"
self_id = "{BOT}"

[accounts.hub]
platform = "api"
listen = "{api}"
"#,
        broker = broker.toml()
    );
    for (n, group) in WEEK_GROUPS.iter().enumerate() {
        config.push_str(&format!(
            "\n[[links]]\nname = \"l{n}\"\ngroups = [\"qq:{group}\", \"hub:g{n}\"]\n"
        ));
    }
    config
}

/// Groups whose last four complete weeks had these message totals, oldest first.
const WEEK_GROUPS: [i64; 3] = [10001, 10002, 10003];
/// The weekly totals of each of [`WEEK_GROUPS`], and the `decline_weeks` they give.
const WEEKLY: [([u64; 4], u64); 3] = [
    ([100, 80, 60, 40], 3),
    ([100, 80, 90, 40], 1),
    ([10, 8, 6, 4], 0),
];

/// Noon, in +08:00, of the day `back` days before today, as a Unix second.
fn noon_days_ago(back: i64) -> i64 {
    let offset = 8 * 3600;
    let today = (now_secs() + offset).div_euclid(86_400);
    (today - back) * 86_400 + 12 * 3600 - offset
}

/// Days back to the Monday of the week `weeks` weeks before this one.
fn monday_weeks_ago(weeks: i64) -> i64 {
    let offset = 8 * 3600;
    let today = (now_secs() + offset).div_euclid(86_400);
    let since_monday = (today + 3).rem_euclid(7);
    since_monday + 7 * weeks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_and_tiers_follow_the_platform_timestamps() {
    let broker = Broker::embedded();
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    // The first group has four members: X, Y, Z and W (the member count NapCat tells).
    let (x, y, w) = (2000000001, 2000000002, 2000000004);
    qq.set_member_list(
        WEEK_GROUPS[0],
        &[
            (x, "X", "x"),
            (y, "Y", "y"),
            (2000000003, "Z", "z"),
            (w, "W", "w"),
        ],
    );
    // NapCat's `get_group_list` answers from a cache; the count that counts is the fresh
    // one of `get_group_info` with `no_cache`.
    qq.set_listed_count(WEEK_GROUPS[0], 99);
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(dir.path(), &weeks_config(&broker, &qq_url, api)).await;
    qq.wait_connections(1).await;

    let mut id = 0;
    let mut say = |group: i64, user: i64, time: i64| {
        id += 1;
        let mut event = said(BOT, id, user, time, &format!("message {id}"));
        event["group_id"] = json!(group);
        qq.push_event(event);
    };
    // W spoke on the Mondays of the four weeks before this one, as often as WEEKLY says.
    for (group, (weekly, _)) in WEEK_GROUPS.iter().zip(WEEKLY) {
        for (index, count) in weekly.iter().enumerate() {
            let time = noon_days_ago(monday_weeks_ago(4 - index as i64));
            for _ in 0..*count {
                say(*group, w, time);
            }
        }
    }
    // X spoke on 5 of the last 7 days, Y on 2, Z never.
    for back in 0..5 {
        say(WEEK_GROUPS[0], x, noon_days_ago(back).min(now_secs()));
    }
    for back in [1, 3] {
        say(WEEK_GROUPS[0], y, noon_days_ago(back));
    }

    // A member count told 8 days ago (published by another process of the deployment, as
    // a connector in a scaled-out setup would), then today one member left and one joined:
    // the 7-day rates are against that count.
    let mqtt = qunbridge_tests::RawMqtt::connect(broker.port(), "count-publisher").await;
    let told = (noon_days_ago(8) * 1000) as u64;
    let group = WEEK_GROUPS[0];
    let count = json!({
        "v": 1, "id": format!("qq:{group}:count:{told}"),
        "origin": {"platform": "qq", "account": "qq", "group": group.to_string(), "message_id": format!("count:{told}")},
        "sender": {"id": "", "name": ""}, "ts_ms": told, "kind": "member",
        "member": {"change": "count", "how": "unknown", "member_count": 5}
    });
    mqtt.publish(
        &format!("qunbridge/v1/in/qq/{group}"),
        serde_json::to_vec(&count).expect("JSON"),
    )
    .await;
    qq.push_event(member_decrease(group, 2000000003, 2000000003, "leave"));
    qq.push_event(member_increase(group, 2000000005, 0, "approve"));

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let report = loop {
        let (code, out) = stats_cli(daemon.admin, &["--format", "json", "--since", "2020-01-01"]);
        assert_eq!(code, 0);
        let report: Value = serde_json::from_slice(&out).expect("JSON report");
        let total: u64 = report["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["periods"].as_array().into_iter().flatten())
            .map(|p| p["messages"].as_u64().unwrap_or(0))
            .sum();
        let rates = report["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|g| g["alias"] == "qq#1" && g["figures"]["churn_rate_7d"].is_number());
        if rates && total == 100 + 80 + 60 + 40 + 100 + 80 + 90 + 40 + 10 + 8 + 6 + 4 + 5 + 2 {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all counted: {total}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let group = |alias: &str| -> Value {
        report["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["alias"] == alias)
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (n, (_, decline)) in WEEKLY.iter().enumerate() {
        let alias = format!("qq#{}", n + 1);
        assert_eq!(
            group(&alias)["figures"]["decline_weeks"],
            *decline,
            "{alias}"
        );
    }
    let figures = &group("qq#1")["figures"];
    assert_eq!(
        figures["member_count"], 4,
        "get_group_info's count, not the list's 99"
    );
    let asked = qq.untaken("get_group_info");
    assert!(
        asked
            .iter()
            .any(|call| call["params"] == json!({"group_id": WEEK_GROUPS[0], "no_cache": true})),
        "{asked:?}"
    );
    assert_eq!(
        figures["tiers"],
        json!({"core": 1, "regular": 1, "lurking": 1, "silent": 1}),
        "X core, Y regular, W lurking, Z silent: {figures}"
    );
    assert_eq!(figures["active_7d"], 2);
    assert_eq!(
        figures["churn_rate_7d"], 0.2,
        "one leave against 5 members: {figures}"
    );
    assert_eq!(figures["join_rate_7d"], 0.2);
    assert_eq!(figures["active_28d"], 3);

    // `--by week` sums Monday to Sunday: the week of W's 100 messages shows 100.
    let since = {
        let (code, out) = stats_cli(
            daemon.admin,
            &[
                "--format",
                "json",
                "--group",
                "qq#1",
                "--by",
                "week",
                "--since",
                "2020-01-01",
            ],
        );
        assert_eq!(code, 0);
        let report: Value = serde_json::from_slice(&out).expect("JSON report");
        report["groups"][0]["periods"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let weekly: Vec<u64> = since
        .iter()
        .map(|p| p["messages"].as_u64().unwrap_or(0))
        .filter(|m| *m > 0)
        .collect();
    assert_eq!(weekly[..4], [100, 80, 60, 40], "weekly rows: {weekly:?}");

    // The gauges say the same (a scrape refreshes gauges older than 5 s).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = daemon.metrics().await;
        if metrics.contains("qunbridge_group_decline_weeks{group=\"qq#1\"} 3")
            && metrics.contains("qunbridge_group_decline_weeks{group=\"qq#2\"} 1")
            && metrics.contains("qunbridge_group_members_by_tier{group=\"qq#1\",tier=\"silent\"} 1")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "gauges: {metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A ComWeChatClient account that polls member lists and a spec-compliant OneBot v12
/// account that reports notices, each with a WeChat group linked to an `api` group.
fn wechat_config(broker: &Broker, polled: &str, spec: &str, api: SocketAddr) -> String {
    format!(
        r#"{broker}
[accounts.wx-com]
platform = "wechat"
url = "{polled}"
member_poll = "5s"

[accounts.wx-spec]
platform = "wechat"
url = "{spec}"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "polled"
groups = ["wx-com:{POLLED_GROUP}", "hub:p"]

[[links]]
name = "spec"
groups = ["wx-spec:{SPEC_GROUP}", "hub:s"]

[stats.aliases]
"wx-com:{POLLED_GROUP}" = "wx-polled"
"wx-spec:{SPEC_GROUP}" = "wx-spec"
"#,
        broker = broker.toml()
    )
}

/// The WeChat group whose members are polled.
const POLLED_GROUP: &str = "11111111111@chatroom";
/// The WeChat group of the spec-compliant implementation.
const SPEC_GROUP: &str = "22222222222@chatroom";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_member_list_gives_joins_and_leaves_and_notices_need_no_poll() {
    use qunbridge_tests::onebot12_peer::{self as v12, Behaviour, OneBot12Peer};
    let broker = Broker::embedded();
    let (polled, polled_url) = OneBot12Peer::serve("wxid_com", Behaviour::comwechat(None)).await;
    let (spec, spec_url) = OneBot12Peer::serve("wxid_spec", Behaviour::spec(None)).await;
    polled.set_group_members(
        POLLED_GROUP,
        &[("wxid_a", "阿"), ("wxid_b", "贝"), ("wxid_c", "西")],
    );
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(
        dir.path(),
        &wechat_config(&broker, &polled_url, &spec_url, api),
    )
    .await;
    polled.wait_connections(1).await;
    spec.wait_connections(1).await;

    // The first poll is the baseline; the next one (5 s later) sees b gone and d new.
    let first = polled.next_action("get_group_member_list").await;
    assert_eq!(first["params"]["group_id"], POLLED_GROUP);
    polled.set_group_members(
        POLLED_GROUP,
        &[("wxid_a", "阿"), ("wxid_c", "西"), ("wxid_d", "迪")],
    );
    spec.push_event(v12::member_increase(
        "wxid_spec",
        SPEC_GROUP,
        "wxid_e",
        "invite",
    ));

    // The days of the report (the last week) added up: a run at the stats day's midnight
    // counts the poll on one day and the notice on the next.
    let row = |alias: &str| {
        let (code, out) = stats_cli(daemon.admin, &["--format", "json", "--group", alias]);
        assert_eq!(code, 0);
        let report: Value = serde_json::from_slice(&out).expect("JSON report");
        let periods = report["groups"][0]["periods"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let sum = |field: &str| {
            periods
                .iter()
                .filter_map(|p| p[field].as_u64())
                .sum::<u64>()
        };
        let by_how = |field: &str| {
            let mut merged = serde_json::Map::new();
            for period in &periods {
                for (how, count) in period[field].as_object().into_iter().flatten() {
                    let before = merged.get(how).and_then(Value::as_u64).unwrap_or(0);
                    merged.insert(how.clone(), json!(before + count.as_u64().unwrap_or(0)));
                }
            }
            Value::Object(merged)
        };
        let member_count = periods
            .iter()
            .rev()
            .map(|p| p["member_count"].clone())
            .find(|count| !count.is_null())
            .unwrap_or(Value::Null);
        json!({
            "joins": sum("joins"),
            "leaves": sum("leaves"),
            "joins_by_how": by_how("joins_by_how"),
            "leaves_by_how": by_how("leaves_by_how"),
            "member_count": member_count,
        })
    };
    let deadline = tokio::time::Instant::now() + PATIENCE + Duration::from_secs(5);
    loop {
        let polled_row = row("wx-polled");
        let spec_row = row("wx-spec");
        if polled_row["joins"] == 1 && polled_row["leaves"] == 1 && spec_row["joins"] == 1 {
            assert_eq!(polled_row["joins_by_how"], json!({"poll": 1}));
            assert_eq!(polled_row["leaves_by_how"], json!({"poll": 1}));
            assert_eq!(polled_row["member_count"], 3);
            assert_eq!(spec_row["joins_by_how"], json!({"invite": 1}));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "polled {polled_row}, spec {spec_row}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        spec.count_actions("get_group_member_list"),
        0,
        "the account without member_poll never polls"
    );
}
