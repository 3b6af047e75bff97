from django.contrib import admin

from bulkops.models import BulkOperation, Session

admin.site.register(Session)
admin.site.register(BulkOperation)
