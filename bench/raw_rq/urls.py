from django.urls import re_path

from .views import EnqueueView

urlpatterns = [re_path(r"^jobs/?$", EnqueueView.as_view())]
