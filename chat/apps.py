from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_save, pre_save

        from chat import receivers
        from chat.models import Room

        # See chat/receivers.py: the ways a user loses access to a private room.
        m2m_changed.connect(
            receivers.members_changed, sender=Room.members.through, dispatch_uid="chat.members_changed"
        )
        pre_save.connect(receivers.room_saving, sender=Room, dispatch_uid="chat.room_saving")
        post_save.connect(receivers.room_saved, sender=Room, dispatch_uid="chat.room_saved")
