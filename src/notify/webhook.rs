//! Webhooks: the event as JSON (or Slack's `{"text": …}`) in a POST, signed with HMAC-SHA256 of
//! the body under `--webhook-secret`, and named by its event id so receivers can drop repeats.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Error, Event, Format, Kind, Secret, hex};

/// The header carrying the signature: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Kairos-Signature";
/// The header carrying the event id.
pub const EVENT_HEADER: &str = "X-Kairos-Event";

/// The body a sink of this format gets.
pub fn body(event: &Event, format: Format) -> Vec<u8> {
    let value = match format {
        Format::Json => serde_json::to_value(event).unwrap_or_default(),
        Format::Slack => serde_json::json!({ "text": slack_text(event) }),
    };
    value.to_string().into_bytes()
}

/// The event as one Slack message: a headline with a link, then the details and stderr's end.
pub fn slack_text(event: &Event) -> String {
    let icon = match event.kind {
        Kind::Failure => ":x:",
        Kind::Recovery | Kind::Success => ":white_check_mark:",
        Kind::Skipped => ":fast_forward:",
        Kind::Late => ":hourglass:",
    };
    let headline = super::headline(event);
    let mut text = match &event.link {
        // Slack's link markup; `<`, `>` and `&` are the characters it wants escaped.
        Some(link) => format!("{icon} <{}|{}>", link, slack_escape(&headline)),
        None => format!("{icon} {}", slack_escape(&headline)),
    };
    let mut details = Vec::new();
    if let Some(task) = &event.task_id {
        details.push(format!("task `{}`", slack_escape(task)));
    }
    if let Some(worker) = event.worker.as_ref().filter(|w| !w.is_empty()) {
        details.push(format!("on {}", slack_escape(worker)));
    }
    if let Some(ms) = event.duration_ms {
        details.push(format!("after {}", super::seconds(ms)));
    }
    if !details.is_empty() {
        text.push_str(&format!("\n{}", details.join(", ")));
    }
    if !event.message.is_empty() {
        text.push_str(&format!("\n{}", slack_escape(&event.message)));
    }
    if !event.stderr_tail.is_empty() {
        text.push_str(&format!(
            "\n```{}```",
            slack_escape(&event.stderr_tail.replace("```", "'''"))
        ));
    }
    text
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `sha256=<hex>` of the body under the secret.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// One delivery attempt: success is any 2xx answer. The client's timeout bounds it.
///
/// # Errors
/// The endpoint could not be reached in time, or answered something else than 2xx.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    event: &Event,
    format: Format,
    secret: Option<&Secret>,
) -> Result<(), Error> {
    let body = body(event, format);
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, &event.id);
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, &body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| Error::Http(e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Error::Status {
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "0123456789abcdef0123456789abcdef".to_owned(),
            kind: Kind::Failure,
            job: "nightly".to_owned(),
            task_id: Some("ct:1:0:nightly:".to_owned()),
            worker: Some("w1".to_owned()),
            exit_code: Some(3),
            duration_ms: Some(2000),
            attempt: Some(2),
            message: "exited with status 3".to_owned(),
            stderr_tail: "a <b> & c".to_owned(),
            due: None,
            at: "2027-01-15T08:00:01.500Z".to_owned(),
            link: Some("http://k/tasks/ct%3A1%3A0%3Anightly%3A".to_owned()),
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let secret = Secret::new("Jefe".to_owned());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_json_body_is_the_event_with_every_field() {
        let value: serde_json::Value = serde_json::from_slice(&body(&event(), Format::Json)).unwrap();
        for key in [
            "id",
            "kind",
            "job",
            "taskId",
            "worker",
            "exitCode",
            "durationMs",
            "attempt",
            "message",
            "stderrTail",
            "due",
            "at",
            "link",
        ] {
            assert!(value.get(key).is_some(), "{key} in {value}");
        }
        assert_eq!(value["kind"], "failure");
        assert_eq!(value["due"], serde_json::Value::Null, "absent values are null");
    }

    #[test]
    fn the_slack_body_is_one_text_with_a_link_and_escaped_output() {
        let value: serde_json::Value = serde_json::from_slice(&body(&event(), Format::Slack)).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 1, "only text: {value}");
        let text = object["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                ":x: <http://k/tasks/ct%3A1%3A0%3Anightly%3A|kairos: job nightly failed (exit code 3)>"
            ),
            "{text}"
        );
        assert!(
            text.contains("task `ct:1:0:nightly:`, on w1, after 2.0 s"),
            "{text}"
        );
        assert!(text.contains("```a &lt;b&gt; &amp; c```"), "{text}");
    }
}
