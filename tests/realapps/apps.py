"""Generators of real apps (Django "mysite"/polls, a Flask app factory "shop", a plain WSGI app),
and the saves the tests make to them: one ``EditCase`` per edit category, one ``FailureCase`` per
kind of broken save (with the save that fixes it).

A generator takes a directory, writes the app there, prepares its database with the framework's
own tools (subprocesses: ``manage.py makemigrations``/``migrate``/``shell``, Flask's
``db.create_all()``), and returns the ``AppSpec`` to serve it. Pages are deterministic: fixed
dates, no timestamps; CSRF tokens are normalized by the harness.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PYTHON = sys.executable


@dataclass(frozen=True)
class AppSpec:
    """How to serve and look at a generated app."""

    name: str                          # also the folder name inside a test's tmp_path
    app: str                           # "module:attr", served from the app folder (zero config)
    paths: tuple[str, ...]             # the pages every test compares
    extra_paths: tuple[str, ...] = ()  # pages some edits add (404 before them)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request

    @property
    def all_paths(self) -> tuple[str, ...]:
        return self.paths + self.extra_paths


@dataclass(frozen=True)
class Change:
    """Replace ``old`` by ``new`` in the file ``path`` (relative to the app folder)."""

    path: str
    old: str
    new: str
    atomic: bool = False  # save through a temporary file renamed over the original


@dataclass(frozen=True)
class EditCase:
    """One good save (possibly of several files, in this order), with what a developer runs around it."""

    changes: tuple[Change, ...]
    extra_paths: tuple[str, ...] = ()              # pages to compare besides AppSpec.paths
    before: Callable[[Path], None] | None = None   # run before the first change (e.g. ALTER TABLE)
    after: Callable[[Path], None] | None = None    # run after the last change (e.g. migrate)


@dataclass(frozen=True)
class FailureCase:
    """A broken save, the log text that shows the server noticed it, and the fix (a good edit)."""

    broken: Change
    log_pattern: str   # regex the server's log must show after the broken save
    fix: EditCase      # applied to the ORIGINAL file (the broken save is replaced by it)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def _run(args: list[str], cwd: Path, what: str) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


# =====================================================================================  Django

DJANGO_FILES = {
    "manage.py": '''
        #!/usr/bin/env python
        """Django's command-line utility for administrative tasks."""
        import os
        import sys


        def main():
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)


        if __name__ == "__main__":
            main()
        ''',
    "mysite/__init__.py": "",
    "mysite/settings.py": '''
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parent.parent

        SECRET_KEY = "realapps-test-key-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

        INSTALLED_APPS = [
            "polls.apps.PollsConfig",
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
        ]

        MIDDLEWARE = [
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ]

        ROOT_URLCONF = "mysite.urls"

        TEMPLATES = [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ],
                },
            },
        ]

        WSGI_APPLICATION = "mysite.wsgi.application"

        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": BASE_DIR / "db.sqlite3",
            }
        }

        LANGUAGE_CODE = "en-us"
        TIME_ZONE = "UTC"
        USE_I18N = True
        USE_TZ = True

        STATIC_URL = "static/"
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

        # Errors of requests go to the server's log (DEBUG is off, so pages stay deterministic).
        LOGGING = {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False}},
        }

        SITE_TITLE = "Realapps Polls"
        ''',
    "mysite/urls.py": '''
        from django.contrib import admin
        from django.urls import include, path

        urlpatterns = [
            path("polls/", include("polls.urls")),
            path("admin/", admin.site.urls),
        ]
        ''',
    "mysite/wsgi.py": '''
        """WSGI config for mysite."""
        import os

        from django.core.wsgi import get_wsgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

        application = get_wsgi_application()
        ''',
    "mysite/asgi.py": '''
        """ASGI config for mysite."""
        import os

        from django.core.asgi import get_asgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

        application = get_asgi_application()
        ''',
    "polls/__init__.py": "",
    "polls/apps.py": '''
        from django.apps import AppConfig


        class PollsConfig(AppConfig):
            default_auto_field = "django.db.models.BigAutoField"
            name = "polls"
        ''',
    "polls/models.py": '''
        import datetime

        from django.db import models
        from django.utils import timezone


        class Question(models.Model):
            question_text = models.CharField(max_length=200)
            pub_date = models.DateTimeField("date published")

            def __str__(self):
                return self.question_text

            def was_published_recently(self):
                now = timezone.now()
                return now - datetime.timedelta(days=1) <= self.pub_date <= now

            @property
            def short_text(self):
                return self.question_text[:12]


        class Choice(models.Model):
            question = models.ForeignKey(Question, on_delete=models.CASCADE)
            choice_text = models.CharField(max_length=200)
            votes = models.IntegerField(default=0)

            def __str__(self):
                return self.choice_text
        ''',
    "polls/admin.py": '''
        from django.contrib import admin

        from .models import Choice, Question


        class ChoiceInline(admin.TabularInline):
            model = Choice
            extra = 1


        class QuestionAdmin(admin.ModelAdmin):
            list_display = ["question_text", "pub_date"]
            inlines = [ChoiceInline]


        admin.site.register(Question, QuestionAdmin)
        ''',
    "polls/helpers.py": '''
        """Small formatting helpers for the polls views (a leaf: imports nothing of the project)."""


        def heading(text):
            return f"** {text} **"
        ''',
    "polls/views.py": '''
        from django.conf import settings
        from django.contrib import admin
        from django.http import HttpResponse  # noqa: F401  (the tutorial's first views used it)
        from django.shortcuts import get_object_or_404, render
        from django.views import generic

        from . import helpers
        from .models import Question


        class IndexView(generic.ListView):
            template_name = "polls/index.html"
            context_object_name = "latest_question_list"

            def get_queryset(self):
                return Question.objects.order_by("pub_date")


        class DetailView(generic.DetailView):
            model = Question
            template_name = "polls/detail.html"


        def results(request, question_id):
            question = get_object_or_404(Question, pk=question_id)
            fields = [(f.name, f.value_to_string(question)) for f in Question._meta.concrete_fields]
            return render(request, "polls/results.html", {
                "question": question,
                "heading": helpers.heading(question.question_text),
                "recent": question.was_published_recently(),
                "fields": fields,
            })


        def about(request):
            return render(request, "polls/about.html", {"site_title": settings.SITE_TITLE})


        def admin_info(request):
            registry = admin.site._registry
            models = sorted(f"{model._meta.label} -> {type(model_admin).__name__}"
                            for model, model_admin in registry.items())
            list_display = list(registry[Question].list_display) if Question in registry else None
            return render(request, "polls/admin_info.html", {"models": models, "list_display": list_display})
        ''',
    "polls/urls.py": '''
        from django.urls import path

        from . import views

        app_name = "polls"
        urlpatterns = [
            path("", views.IndexView.as_view(), name="index"),
            path("<int:pk>/", views.DetailView.as_view(), name="detail"),
            path("<int:question_id>/results/", views.results, name="results"),
            path("about/", views.about, name="about"),
            path("admin-info/", views.admin_info, name="admin_info"),
        ]
        ''',
    "polls/migrations/__init__.py": "",
    "polls/templates/polls/base.html": '''
        <!doctype html>
        <html>
        <head><title>{% block title %}Polls{% endblock %}</title></head>
        <body>
        <header>Polls site</header>
        <main>
        {% block content %}{% endblock %}
        </main>
        <footer>base footer v1</footer>
        </body>
        </html>
        ''',
    "polls/templates/polls/index.html": '''
        {% extends "polls/base.html" %}
        {% block title %}Latest questions{% endblock %}
        {% block content %}
        <h1>Latest questions</h1>
        <ul>
        {% for question in latest_question_list %}
          <li><a href="{% url 'polls:detail' question.id %}">{{ question.question_text }}</a> [{{ question.short_text }}]</li>
        {% empty %}
          <li>No polls are available.</li>
        {% endfor %}
        </ul>
        {% endblock %}
        ''',
    "polls/templates/polls/detail.html": '''
        {% extends "polls/base.html" %}
        {% block title %}{{ question.question_text }}{% endblock %}
        {% block content %}
        <form action="#" method="post">
        {% csrf_token %}
        <fieldset>
          <legend><h1>{{ question.question_text }}</h1></legend>
          {% for choice in question.choice_set.all %}
            <input type="radio" name="choice" id="choice{{ forloop.counter }}" value="{{ choice.id }}">
            <label for="choice{{ forloop.counter }}">{{ choice.choice_text }}</label><br>
          {% endfor %}
        </fieldset>
        <input type="submit" value="Vote">
        </form>
        {% endblock %}
        ''',
    "polls/templates/polls/results.html": '''
        {% extends "polls/base.html" %}
        {% block content %}
        <h1>{{ heading }}</h1>
        <p>recent: {{ recent }}; short: {{ question.short_text }}</p>
        <ul>
        {% for choice in question.choice_set.all %}
          <li>{{ choice.choice_text }} -- {{ choice.votes }} vote{{ choice.votes|pluralize }}</li>
        {% endfor %}
        </ul>
        <dl>
        {% for name, value in fields %}<dt>{{ name }}</dt><dd>{{ value }}</dd>
        {% endfor %}
        </dl>
        {% endblock %}
        ''',
    "polls/templates/polls/about.html": '''
        {% extends "polls/base.html" %}
        {% block title %}About{% endblock %}
        {% block content %}<p>Site title: {{ site_title }}</p>{% endblock %}
        ''',
    "polls/templates/polls/admin_info.html": '''
        {% extends "polls/base.html" %}
        {% block content %}
        <ul>{% for line in models %}<li>{{ line }}</li>{% endfor %}</ul>
        <p>Question list_display: {{ list_display }}</p>
        {% endblock %}
        ''',
}

DJANGO_SEED = '''
import datetime

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore

from polls.models import Question

utc = datetime.timezone.utc
q1 = Question.objects.create(question_text="What's new?", pub_date=datetime.datetime(2020, 1, 1, 12, tzinfo=utc))
q1.choice_set.create(choice_text="Not much", votes=3)
q1.choice_set.create(choice_text="The sky", votes=1)
q2 = Question.objects.create(question_text="Favourite colour of the sea?",
                             pub_date=datetime.datetime(2021, 6, 1, 8, tzinfo=utc))
q2.choice_set.create(choice_text="Blue", votes=2)
user = User.objects.create_superuser("admin", "admin@example.com", "admin-password")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.set_expiry(30 * 24 * 3600)
session.save()
print("REALAPPS_SESSION=" + session.session_key)
'''


def manage(app_dir: Path, *args: str) -> str:
    """Run ``python manage.py ARGS`` in ``app_dir``; return its stdout (raise on failure)."""
    return _run([PYTHON, "manage.py", *args], app_dir, f"manage.py {' '.join(args)}")


def migrate(app_dir: Path) -> None:
    """What a developer runs after changing a model: makemigrations, then migrate."""
    manage(app_dir, "makemigrations", "polls", "--noinput")
    manage(app_dir, "migrate", "--noinput")


def generate_django(root: Path) -> AppSpec:
    """The tutorial's mysite + polls in ``root`` (manage.py at its top), migrated and seeded."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root, DJANGO_FILES)
    migrate(root)
    out = manage(root, "shell", "-c", DJANGO_SEED)
    session = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("REALAPPS_SESSION="))
    return AppSpec(
        name="mysite", app="mysite.wsgi:application",
        paths=("/polls/", "/polls/1/", "/polls/1/results/", "/polls/about/", "/polls/admin-info/",
               "/admin/polls/question/"),
        extra_paths=("/polls/hello/",),
        headers={"Cookie": f"sessionid={session}"})


DJANGO_EDITS: dict[str, EditCase] = {
    # a view: the class-based index lists the newest first
    "view": EditCase((Change("polls/views.py", 'order_by("pub_date")', 'order_by("-pub_date")'),)),
    # a new route: a view, then the URLconf entry
    "new_route": EditCase((
        Change("polls/views.py", "def about(request):",
               'def hello(request):\n    return HttpResponse(helpers.heading("hello") + "\\n", '
               'content_type="text/plain")\n\n\ndef about(request):'),
        Change("polls/urls.py", '    path("about/", views.about, name="about"),\n',
               '    path("about/", views.about, name="about"),\n'
               '    path("hello/", views.hello, name="hello"),\n'),
    ), extra_paths=("/polls/hello/",)),
    "helper": EditCase((Change("polls/helpers.py", 'f"** {text} **"', 'f"== {text} =="'),)),
    "model_method": EditCase((Change("polls/models.py", "timedelta(days=1)", "timedelta(days=36500)"),)),
    "model_property": EditCase((Change("polls/models.py", "self.question_text[:12]",
                                       "self.question_text[:5].upper()"),)),
    "model_field": EditCase((Change(
        "polls/models.py", '    pub_date = models.DateTimeField("date published")\n',
        '    pub_date = models.DateTimeField("date published")\n'
        '    topic = models.CharField(max_length=30, default="general")\n'),), after=migrate),
    "admin": EditCase((Change("polls/admin.py", 'list_display = ["question_text", "pub_date"]',
                              'list_display = ["question_text", "pub_date", "was_published_recently"]'),)),
    "settings": EditCase((Change("mysite/settings.py", 'SITE_TITLE = "Realapps Polls"',
                                 'SITE_TITLE = "Polls, retitled"', atomic=True),)),
    "child_template": EditCase((Change("polls/templates/polls/index.html", "<h1>Latest questions</h1>",
                                       "<h1>Latest questions, edited</h1>", atomic=True),)),
    "base_template": EditCase((Change("polls/templates/polls/base.html", "base footer v1",
                                      "base footer v2"),)),
}

DJANGO_FAILURES: dict[str, FailureCase] = {
    "syntax_error": FailureCase(
        Change("polls/views.py", "def about(request):", "def about(request:"),
        r"SyntaxError", DJANGO_EDITS["view"]),
    "name_error": FailureCase(
        Change("polls/helpers.py", "def heading(text):", "UNDEFINED_CONSTANT + 1\n\n\ndef heading(text):"),
        r"NameError", DJANGO_EDITS["helper"]),
    "reregistered_admin": FailureCase(
        Change("polls/admin.py", "admin.site.register(Question, QuestionAdmin)\n",
               "admin.site.register(Question, QuestionAdmin)\nadmin.site.register(Question)\n"),
        r"AlreadyRegistered|already registered", DJANGO_EDITS["admin"]),
    "endless_import": FailureCase(
        Change("polls/helpers.py", "def heading(text):", "while True:\n    pass\n\n\ndef heading(text):"),
        r"hung|did not finish", DJANGO_EDITS["helper"]),
}


# =====================================================================================  Flask

FLASK_FILES = {
    "wsgi.py": '''
        from shop import create_app

        app = create_app()
        ''',
    "shop/__init__.py": '''
        from flask import Flask

        from .extensions import db


        def create_app(config_object="shop.config.Config"):
            app = Flask(__name__)
            app.config.from_object(config_object)
            db.init_app(app)

            from .plugins import tax  # noqa: F401  (registers itself in PRICE_PLUGINS)
            from .views import bp

            app.register_blueprint(bp)
            return app
        ''',
    "shop/config.py": '''
        import os

        BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


        class Config:
            SHOP_NAME = "Realapps Shop"
            SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(BASE_DIR, "shop.db")
            SQLALCHEMY_TRACK_MODIFICATIONS = False
        ''',
    "shop/extensions.py": '''
        """Extension objects: created here once, bound to the app in create_app()."""
        from flask_sqlalchemy import SQLAlchemy

        db = SQLAlchemy()

        CURRENCY = "EUR"
        ''',
    "shop/models.py": '''
        import enum

        from .extensions import db


        class Category(enum.Enum):
            BOOKS = "books"
            GAMES = "games"
            MUSIC = "music"


        class Product(db.Model):
            __tablename__ = "product"

            id = db.Column(db.Integer, primary_key=True)
            name = db.Column(db.String(80), nullable=False)
            price_cents = db.Column(db.Integer, nullable=False)
            category = db.Column(db.Enum(Category), nullable=False)

            @property
            def label(self):
                return f"{self.name} [{self.category.value}]"

            def is_expensive(self):
                return self.price_cents > 2000
        ''',
    "shop/services.py": '''
        """Formatting and pricing helpers for the views (a leaf: no state, no project imports)."""


        def format_price(cents, currency):
            return f"{cents / 100:.2f} {currency}"


        def apply_plugins(cents, plugins):
            for plugin in plugins:
                cents = plugin.apply(cents)
            return cents
        ''',
    "shop/plugins/__init__.py": '''
        """Price plugins register themselves in this list when their module is imported."""

        PRICE_PLUGINS = []
        ''',
    "shop/plugins/tax.py": '''
        from . import PRICE_PLUGINS

        RATE = 0.20


        class TaxPlugin:
            name = "tax"
            rate = RATE

            def apply(self, cents):
                return round(cents * (1 + self.rate))


        PRICE_PLUGINS.append(TaxPlugin())
        ''',
    "shop/views.py": '''
        from flask import Blueprint, current_app, render_template

        from . import services
        from .extensions import CURRENCY, db
        from .models import Category, Product
        from .plugins import PRICE_PLUGINS

        bp = Blueprint("shop", __name__)


        def _price(product):
            return services.format_price(services.apply_plugins(product.price_cents, PRICE_PLUGINS), CURRENCY)


        @bp.route("/products")
        def products():
            items = db.session.scalars(db.select(Product).order_by(Product.name)).all()
            rows = [(p.id, p.label, _price(p), p.category is Category.BOOKS, p.is_expensive()) for p in items]
            return render_template("products.html", rows=rows)


        @bp.route("/products/<int:product_id>")
        def product(product_id):
            item = db.get_or_404(Product, product_id)
            columns = [(column.key, getattr(item, column.key)) for column in Product.__table__.columns]
            return render_template("product.html", product=item, price=_price(item), columns=columns)


        @bp.route("/about")
        def about():
            return render_template("about.html", shop_name=current_app.config["SHOP_NAME"], currency=CURRENCY)


        @bp.route("/plugins")
        def plugins():
            return render_template("plugins.html", plugins=[(p.name, p.rate) for p in PRICE_PLUGINS])


        @bp.route("/categories")
        def categories():
            return render_template("categories.html", categories=[(c.name, c.value) for c in Category])
        ''',
    "shop/templates/base.html": '''
        <!doctype html>
        <html>
        <head><title>{% block title %}Shop{% endblock %}</title></head>
        <body>
        <header>The shop</header>
        <main>
        {% block content %}{% endblock %}
        </main>
        <footer>shop footer v1</footer>
        </body>
        </html>
        ''',
    "shop/templates/products.html": '''
        {% extends "base.html" %}
        {% block title %}Products{% endblock %}
        {% block content %}
        <h1>All products</h1>
        <ul>
        {% for id, label, price, featured, expensive in rows %}
          <li><a href="/products/{{ id }}">{{ label }}</a> {{ price }}{% if featured %} (featured){% endif %}{% if expensive %} (expensive){% endif %}</li>
        {% endfor %}
        </ul>
        {% endblock %}
        ''',
    "shop/templates/product.html": '''
        {% extends "base.html" %}
        {% block title %}{{ product.name }}{% endblock %}
        {% block content %}
        <h1>{{ product.label }}</h1>
        <p>price: {{ price }}; expensive: {{ product.is_expensive() }}</p>
        <dl>
        {% for key, value in columns %}<dt>{{ key }}</dt><dd>{{ value }}</dd>
        {% endfor %}
        </dl>
        {% endblock %}
        ''',
    "shop/templates/about.html": '''
        {% extends "base.html" %}
        {% block content %}<p>{{ shop_name }}, prices in {{ currency }}</p>{% endblock %}
        ''',
    "shop/templates/plugins.html": '''
        {% extends "base.html" %}
        {% block content %}
        <p>{{ plugins|length }} price plugin(s)</p>
        <ul>{% for name, rate in plugins %}<li>{{ name }}: {{ rate }}</li>{% endfor %}</ul>
        {% endblock %}
        ''',
    "shop/templates/categories.html": '''
        {% extends "base.html" %}
        {% block content %}
        <ul>{% for name, value in categories %}<li>{{ name }} = {{ value }}</li>{% endfor %}</ul>
        {% endblock %}
        ''',
}

FLASK_SEED = '''
from shop import create_app
from shop.extensions import db
from shop.models import Category, Product

app = create_app()
with app.app_context():
    db.create_all()
    db.session.add_all([
        Product(name="Dune", price_cents=1500, category=Category.BOOKS),
        Product(name="Chess set", price_cents=3500, category=Category.GAMES),
        Product(name="Blue album", price_cents=1200, category=Category.MUSIC),
    ])
    db.session.commit()
'''

# project.py mode: a definition that only lists the files (the imports give the edges).
FLASK_PROJECT_PY = '''
from projectr import Project

p = Project("shop")
p.file("wsgi")
with p.directory("shop"):
    p.file("__init__")
    p.file("config")
    p.file("extensions")
    p.file("models")
    p.file("services")
    with p.directory("plugins"):
        p.file("__init__")
        p.file("tax")
    p.file("views")
'''


def generate_flask(root: Path) -> AppSpec:
    """The "shop" app factory in ``root`` (wsgi.py at its top), its sqlite db created and seeded."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root, FLASK_FILES)
    _run([PYTHON, "-c", FLASK_SEED], root, "seeding shop.db")
    return AppSpec(name="shopapp", app="wsgi:app",
                   paths=("/products", "/products/1", "/about", "/plugins", "/categories"),
                   extra_paths=("/hello",))


def _add_stock_column(app_dir: Path) -> None:
    """What a developer does without migrations: ALTER TABLE first, then the model."""
    with sqlite3.connect(app_dir / "shop.db") as conn:
        conn.execute("ALTER TABLE product ADD COLUMN stock INTEGER NOT NULL DEFAULT 5")


FLASK_EDITS: dict[str, EditCase] = {
    "view": EditCase((Change("shop/views.py", "order_by(Product.name)",
                             "order_by(Product.price_cents.desc())"),)),
    "new_route": EditCase((Change("shop/views.py", '@bp.route("/about")',
                                  '@bp.route("/hello")\ndef hello():\n    return "hello from the shop\\n"'
                                  '\n\n\n@bp.route("/about")'),), extra_paths=("/hello",)),
    "helper": EditCase((Change("shop/services.py", 'f"{cents / 100:.2f} {currency}"',
                               'f"{currency} {cents / 100:.2f}"'),)),
    "model_method": EditCase((Change("shop/models.py", "self.price_cents > 2000",
                                     "self.price_cents > 1000"),)),
    "model_property": EditCase((Change("shop/models.py", 'f"{self.name} [{self.category.value}]"',
                                       'f"{self.name.upper()} / {self.category.name}"'),)),
    "model_field": EditCase((Change(
        "shop/models.py", "    category = db.Column(db.Enum(Category), nullable=False)\n",
        "    category = db.Column(db.Enum(Category), nullable=False)\n"
        "    stock = db.Column(db.Integer, nullable=False, default=0)\n"),), before=_add_stock_column),
    "config": EditCase((Change("shop/config.py", 'SHOP_NAME = "Realapps Shop"', 'SHOP_NAME = "The Edited Shop"',
                               atomic=True),)),
    "enum_member": EditCase((Change("shop/models.py", '    MUSIC = "music"\n',
                                    '    MUSIC = "music"\n    TOYS = "toys"\n'),)),
    "db_owner_module": EditCase((Change("shop/extensions.py", 'CURRENCY = "EUR"',
                                        '# Prices are shown in US dollars now.\nCURRENCY = "USD"'),)),
    "plugin": EditCase((Change("shop/plugins/tax.py", "RATE = 0.20", "RATE = 0.07"),)),
    "child_template": EditCase((Change("shop/templates/products.html", "<h1>All products</h1>",
                                       "<h1>All products, edited</h1>", atomic=True),)),
    "base_template": EditCase((Change("shop/templates/base.html", "shop footer v1", "shop footer v2"),)),
}

FLASK_FAILURES: dict[str, FailureCase] = {
    "syntax_error": FailureCase(
        Change("shop/views.py", "def about():", "def about(:"), r"SyntaxError", FLASK_EDITS["view"]),
    "name_error": FailureCase(
        Change("shop/services.py", "def format_price(cents, currency):",
               "UNDEFINED_CONSTANT + 1\n\n\ndef format_price(cents, currency):"),
        r"NameError", FLASK_EDITS["helper"]),
    "duplicate_table": FailureCase(
        Change("shop/models.py", "    def is_expensive(self):\n        return self.price_cents > 2000\n",
               "    def is_expensive(self):\n        return self.price_cents > 2000\n\n\n"
               "class ProductAgain(db.Model):\n    __tablename__ = \"product\"\n\n"
               "    id = db.Column(db.Integer, primary_key=True)\n"),
        r"already defined|InvalidRequestError", FLASK_EDITS["model_method"]),
    "endless_import": FailureCase(
        Change("shop/services.py", "def format_price(cents, currency):",
               "while True:\n    pass\n\n\ndef format_price(cents, currency):"),
        r"hung|did not finish", FLASK_EDITS["helper"]),
}


# =====================================================================================  plain WSGI

PLAIN_FILES = {
    "hello.py": '''
        from greet import greeting


        def application(environ, start_response):
            path = environ.get("PATH_INFO", "/")
            if path == "/":
                status, body = "200 OK", greeting("world")
            elif path == "/info":
                status, body = "200 OK", "plain wsgi app v1"
            else:
                status, body = "404 Not Found", "not found"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [(body + "\\n").encode()]
        ''',
    "greet.py": '''
        def greeting(name):
            return f"Hello, {name}!"
        ''',
}


def generate_plain(root: Path) -> AppSpec:
    root.mkdir(parents=True, exist_ok=True)
    _write(root, PLAIN_FILES)
    return AppSpec(name="plainapp", app="hello:application", paths=("/", "/info"))


PLAIN_EDITS: dict[str, EditCase] = {
    "view": EditCase((Change("hello.py", "plain wsgi app v1", "plain wsgi app v2"),)),
    "helper": EditCase((Change("greet.py", 'f"Hello, {name}!"', 'f"Goodbye, {name}."', atomic=True),)),
}

PLAIN_FAILURES: dict[str, FailureCase] = {
    "syntax_error": FailureCase(Change("greet.py", "def greeting(name):", "def greeting(name:"),
                                r"SyntaxError", PLAIN_EDITS["helper"]),
    "name_error": FailureCase(Change("hello.py", "def application(", "UNDEFINED_CONSTANT + 1\n\n\ndef application("),
                              r"NameError", PLAIN_EDITS["view"]),
}

GENERATORS: dict[str, Callable[[Path], AppSpec]] = {
    "django": generate_django, "flask": generate_flask, "plain": generate_plain,
}
