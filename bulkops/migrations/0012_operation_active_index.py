"""The active cap's count reads only a user's unfinished operations.

Every start counts the user's pending, running and paused operations. Through the
``user_id`` index that count read every operation the user ever ran and filtered them
by status, so a user's POST grew slower with each operation finished (0.6 ms of index
and heap reads after 1,220 operations; linear after that). The partial index holds
only unfinished operations. The plain ``user_id`` index goes: ``operation_user_created``
leads with the user and serves every other lookup by user, and each operation written
paid for both.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('bulkops', '0011_drop_unused_like_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='bulkoperation',
            name='user',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='bulk_operations', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='bulkoperation',
            index=models.Index(condition=models.Q(('status__in', ('pending', 'running', 'paused'))), fields=['user'], name='operation_user_active'),
        ),
    ]
