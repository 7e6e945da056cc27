from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save, pre_save

        from chat import receivers
        from chat.models import Room

        # See chat/receivers.py: every way a user loses access to a private room.
        membership = Room.members.through
        post_delete.connect(
            receivers.membership_deleted, sender=membership, dispatch_uid="chat.membership_deleted"
        )
        pre_save.connect(
            receivers.membership_changing, sender=membership, dispatch_uid="chat.membership_changing"
        )
        post_save.connect(
            receivers.membership_changed, sender=membership, dispatch_uid="chat.membership_changed"
        )
        pre_save.connect(receivers.room_saving, sender=Room, dispatch_uid="chat.room_saving")
        post_save.connect(receivers.room_saved, sender=Room, dispatch_uid="chat.room_saved")
