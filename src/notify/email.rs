//! Email to a job's owners over SMTP (lettre on tokio, TLS by rustls with ring), with Chronos'
//! `--mail-server`, `--mail-from`, `--mail-user`, `--mail-password` and `--mail-ssl`.

use lettre::message::{Mailbox, Mailboxes, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Error, Event, Mail};

/// Checks an email address (the sender setting).
///
/// # Errors
/// Why it is not one.
pub fn check_address(text: &str) -> Result<(), String> {
    text.parse::<Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("'{text}' is not an email address: {e}"))
}

/// An SMTP client for one server; each message opens its own connection.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// A client for the configured server. Nothing connects until a message is sent.
    ///
    /// # Errors
    /// The sender is not an address, or TLS cannot be set up for the host name.
    pub fn new(mail: &Mail, timeout: std::time::Duration) -> Result<Mailer, Error> {
        let from: Mailbox = mail
            .from
            .parse()
            .map_err(|e| Error::MailServer(format!("--mail-from '{}': {e}", mail.from)))?;
        let tls = TlsParameters::new(mail.host.clone()).map_err(|e| Error::MailServer(e.to_string()))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.clone())
            .port(mail.port)
            .timeout(Some(timeout))
            // SMTPS with --mail-ssl, as Chronos; otherwise STARTTLS whenever the server offers it,
            // so that credentials do not cross the network in clear when they need not.
            .tls(if mail.ssl {
                Tls::Wrapper(tls)
            } else {
                Tls::Opportunistic(tls)
            });
        if let Some(user) = &mail.user {
            let password = mail.password.as_ref().map(|p| p.expose().to_owned());
            builder = builder.credentials(Credentials::new(user.clone(), password.unwrap_or_default()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends the event to these addresses in one message; an address that does not parse is
    /// left out (and logged), the rest still get it.
    ///
    /// # Errors
    /// No address parses, or the server refused or could not be reached.
    pub async fn send(&self, to: &[String], event: &Event, link: &str) -> Result<(), Error> {
        let mut recipients = Mailboxes::new();
        for address in to {
            match address.parse::<Mailbox>() {
                Ok(mailbox) => recipients.push(mailbox),
                Err(error) => {
                    tracing::warn!(job = %event.job, %address, %error, "An owner is not an email address; not mailing it.");
                }
            }
        }
        if recipients.iter().next().is_none() {
            return Err(Error::NoRecipient(to.join(", ")));
        }
        let message = message(&self.from, recipients, event, link)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| Error::Smtp(e.to_string()))
    }
}

/// The message: the headline as subject, the event in plain text, and the event id in the
/// Message-ID, so a repeat after a failover threads with (or is dropped as) the first.
fn message(from: &Mailbox, to: Mailboxes, event: &Event, link: &str) -> Result<Message, Error> {
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .mailbox(lettre::message::header::To::from(to))
        .subject(super::headline(event))
        .message_id(Some(format!("<{}@{domain}>", event.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(super::describe(event, link))
        .map_err(|e| Error::Message(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_the_job_and_carries_the_event_id() {
        let event = Event {
            id: "abc123".to_owned(),
            kind: super::super::Kind::Late,
            job: "etl".to_owned(),
            task_id: Some("ct:1:0:etl:".to_owned()),
            worker: None,
            exit_code: None,
            duration_ms: Some(90_000),
            attempt: Some(0),
            message: String::new(),
            stderr_tail: String::new(),
            due: None,
            at: "2027-01-15T08:00:00.000Z".to_owned(),
            link: None,
        };
        let from: Mailbox = "kairos@example.com".parse().unwrap();
        let to: Mailboxes = "ops@example.com".parse().unwrap();
        let text = String::from_utf8(
            message(&from, to, &event, "http://k/tasks/x")
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(
            text.contains("Subject: kairos: job etl is still running"),
            "{text}"
        );
        assert!(text.contains("Message-ID: <abc123@example.com>"), "{text}");
        assert!(text.contains("To: ops@example.com"), "{text}");
    }
}
