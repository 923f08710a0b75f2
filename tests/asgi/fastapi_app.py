"""A generated FastAPI app: routers in several modules, pydantic models, dependency-injected
services, a SQLAlchemy session on a sqlite file; its edit categories and broken saves.

Served zero-config as ``prefork main:app --reload -w 2`` from its folder (the interface detected),
like the Django and Flask apps of tests/realapps, whose ``AppSpec``, ``EditCase`` and harness it uses.
"""

from __future__ import annotations

from pathlib import Path

from tests.realapps.apps import PYTHON, AppSpec, Change, EditCase, FailureCase, _run, _write

FASTAPI_FILES = {
    "main.py": '''
        from contextlib import asynccontextmanager

        from fastapi import FastAPI

        from shop.config import SHOP_NAME
        from shop.db import Base, engine
        from shop.routers import info, items


        @asynccontextmanager
        async def lifespan(app):
            Base.metadata.create_all(engine)  # what the app needs before its first request
            yield


        app = FastAPI(title=SHOP_NAME, lifespan=lifespan)
        app.include_router(items.router)
        app.include_router(info.router)
        ''',
    "shop/__init__.py": "",
    "shop/config.py": '''
        SHOP_NAME = "ASGI Shop"
        CURRENCY = "EUR"
        ''',
    "shop/db.py": '''
        from pathlib import Path

        from sqlalchemy import create_engine
        from sqlalchemy.orm import DeclarativeBase, sessionmaker

        engine = create_engine(f"sqlite:///{Path(__file__).resolve().parent.parent / 'shop.db'}")
        SessionLocal = sessionmaker(engine)


        class Base(DeclarativeBase):
            pass


        def get_session():
            with SessionLocal() as session:
                yield session
        ''',
    "shop/models.py": '''
        from sqlalchemy import Integer, String
        from sqlalchemy.orm import Mapped, mapped_column

        from shop.db import Base


        class Item(Base):
            __tablename__ = "item"

            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            name: Mapped[str] = mapped_column(String(80))
            price_cents: Mapped[int] = mapped_column(Integer)

            def is_expensive(self) -> bool:
                return self.price_cents > 2000
        ''',
    "shop/schemas.py": '''
        from pydantic import BaseModel


        class ItemOut(BaseModel):
            id: int
            name: str
            price: str
            expensive: bool
        ''',
    "shop/services.py": '''
        from shop.config import CURRENCY


        class PriceService:
            def format(self, cents: int) -> str:
                return f"{cents / 100:.2f} {CURRENCY}"


        def get_price_service() -> PriceService:
            return PriceService()
        ''',
    "shop/routers/__init__.py": "",
    "shop/routers/items.py": '''
        from fastapi import APIRouter, Depends, HTTPException
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from shop.db import get_session
        from shop.models import Item
        from shop.schemas import ItemOut
        from shop.services import PriceService, get_price_service

        router = APIRouter(prefix="/items")


        def to_out(item: Item, prices: PriceService) -> ItemOut:
            return ItemOut(id=item.id, name=item.name, price=prices.format(item.price_cents),
                           expensive=item.is_expensive())


        @router.get("", response_model=list[ItemOut])
        def list_items(session: Session = Depends(get_session), prices: PriceService = Depends(get_price_service)):
            items = session.scalars(select(Item).order_by(Item.name)).all()
            return [to_out(item, prices) for item in items]


        @router.get("/{item_id}", response_model=ItemOut)
        def get_item(item_id: int, session: Session = Depends(get_session),
                     prices: PriceService = Depends(get_price_service)):
            item = session.get(Item, item_id)
            if item is None:
                raise HTTPException(404, "no such item")
            return to_out(item, prices)
        ''',
    "shop/routers/info.py": '''
        from fastapi import APIRouter

        from shop.config import SHOP_NAME

        router = APIRouter()


        @router.get("/about")
        async def about():
            return {"shop": SHOP_NAME, "version": 1}
        ''',
}

SEED = """
from shop.db import Base, SessionLocal, engine
from shop.models import Item
Base.metadata.create_all(engine)
with SessionLocal() as session:
    session.add_all([Item(name="Lamp", price_cents=2500), Item(name="Book", price_cents=1500),
                     Item(name="Mug", price_cents=800)])
    session.commit()
"""


def generate_fastapi(root: Path) -> AppSpec:
    """The FastAPI "shop" in ``root`` (main.py at its top), its sqlite db created and seeded."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root, FASTAPI_FILES)
    _run([PYTHON, "-c", SEED], root, "seeding shop.db")
    return AppSpec(name="fastapishop", app="main:app", paths=("/items", "/items/1", "/about", "/openapi.json"),
                   extra_paths=("/hello",))


FASTAPI_EDITS: dict[str, EditCase] = {
    "router_view": EditCase((Change("shop/routers/items.py", "order_by(Item.name)",
                                    "order_by(Item.price_cents.desc())"),)),
    "new_route": EditCase((Change("shop/routers/info.py", '@router.get("/about")',
                                  '@router.get("/hello")\nasync def hello():\n    return {"hello": "shop"}'
                                  '\n\n\n@router.get("/about")'),), extra_paths=("/hello",)),
    "service": EditCase((Change("shop/services.py", 'f"{cents / 100:.2f} {CURRENCY}"',
                                'f"{CURRENCY} {cents / 100:.2f}"'),)),
    "dependency": EditCase((Change("shop/services.py", "def get_price_service() -> PriceService:\n"
                                   "    return PriceService()",
                                   "class RoundedPriceService(PriceService):\n"
                                   "    def format(self, cents: int) -> str:\n"
                                   "        return f\"~{round(cents / 100)} {CURRENCY}\"\n\n\n"
                                   "def get_price_service() -> PriceService:\n"
                                   "    return RoundedPriceService()"),)),
    "model_method": EditCase((Change("shop/models.py", "self.price_cents > 2000", "self.price_cents > 1000"),)),
    "pydantic_schema": EditCase((Change("shop/schemas.py", "    expensive: bool\n",
                                        "    expensive: bool\n    currency_first: bool = False\n"),)),
    "config": EditCase((Change("shop/config.py", 'CURRENCY = "EUR"', 'CURRENCY = "USD"', atomic=True),)),
}

FASTAPI_FAILURES: dict[str, FailureCase] = {
    "syntax_error": FailureCase(Change("shop/routers/items.py", "def to_out(item", "def to_out(:item"),
                                r"SyntaxError", FASTAPI_EDITS["router_view"]),
    "name_error": FailureCase(Change("shop/services.py", "class PriceService:",
                                     "UNDEFINED_CONSTANT + 1\n\n\nclass PriceService:"),
                              r"NameError", FASTAPI_EDITS["service"]),
}
