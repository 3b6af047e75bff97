"""What the admin's model pages share."""

from django.contrib import admin


class OwnRowsAdmin(admin.ModelAdmin):
    """Every active staff user may open the module and view the rows they own."""

    #: The attribute holding the owning user's id.
    owner_attname = "owner_id"

    def may_view_others(self, request, obj) -> bool:
        raise NotImplementedError

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        if obj is None or getattr(obj, self.owner_attname) == request.user.pk:
            return True
        return self.may_view_others(request, obj)
