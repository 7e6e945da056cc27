from django.urls import path

from chat import api, views

app_name = "chat"
urlpatterns = [
    path("", views.rooms, name="rooms"),
    path("<slug:slug>/", views.room, name="room"),
]

# Under /api/ (config/urls.py): JSON, no namespace; docs/protocol.md lists them.
api_urlpatterns = [
    path("publish/chat/<str:slug>/", api.publish_message),
    path("chat/rooms/", api.rooms),
    path("chat/rooms/<str:slug>/messages/", api.messages),
    path("chat/rooms/<str:slug>/online/", api.online),
]
