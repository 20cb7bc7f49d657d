//! The life of one server's command task (`[commands] enabled`): started once the server's topic level is
//! known, registered with the publisher's command inbox under it, restarted when the level changes, stopped
//! with the server. What a command means is [`crate::commands`]' business.

use tokio_util::sync::CancellationToken;

use super::Context;
use crate::command_verb::Verb;
use crate::commands::CommandTask;
use crate::mqtt::{command_queue, CommandQueue};
use crate::plex::http::PlexHttp;
use crate::topic::ServerTopics;

/// The running command task: the topic level it is registered under, its queue, and how to stop it.
struct Running {
    segment: String,
    queue: CommandQueue,
    stop: CancellationToken,
}

/// One server's command task, when commands are enabled.
pub struct ServerCommands {
    context: Context,
    http: PlexHttp,
    running: Option<Running>,
}

impl ServerCommands {
    pub fn new(context: Context, http: PlexHttp) -> Self {
        ServerCommands { context, http, running: None }
    }

    /// The allowed command verbs that `pick` selects (none when commands are off).
    pub fn allowed(&self, pick: impl Fn(&Verb) -> bool) -> Vec<Verb> {
        self.context.commands.as_ref().map(|(config, _)| config.allowed(pick)).unwrap_or_default()
    }

    /// (Re)starts the task under the server's topic level, unless it runs there already.
    pub fn start(&mut self, topics: &ServerTopics) {
        if self.running.as_ref().is_some_and(|running| running.segment == topics.server_segment()) {
            return;
        }
        self.stop();
        let Some((config, inbox)) = &self.context.commands else { return };
        let (queue, rx) = command_queue(crate::commands::QUEUE);
        let stop = CancellationToken::new();
        let task = CommandTask {
            config: config.clone(),
            http: self.http.clone(),
            topics: topics.clone(),
            prefix: self.context.bridge_topics.prefix().to_owned(),
            publisher: self.context.publisher.clone(),
        };
        tokio::spawn(tracing::Instrument::in_current_span(task.run(rx, stop.clone())));
        inbox.register(topics.server_segment(), queue.clone());
        tracing::info!(topics = %topics.server_command("#"), "listening for commands");
        self.running = Some(Running { segment: topics.server_segment().to_owned(), queue, stop });
    }

    /// Stops the task (it finishes the commands already running) and its routing.
    pub fn stop(&mut self) {
        if let (Some(running), Some((_, inbox))) = (self.running.take(), &self.context.commands) {
            inbox.unregister(&running.segment, &running.queue);
            running.stop.cancel();
        }
    }
}
