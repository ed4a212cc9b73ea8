from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations and inbound mail"

    def ready(self) -> None:
        import conversations.inbound.esp  # noqa: F401 (receives the ESPs' inbound mail)
