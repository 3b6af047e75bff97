app_name = "bulkops-api"
urlpatterns: list = []
