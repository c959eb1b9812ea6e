-- A small Magento 2 catalog: the tables the example's query reads, cut down
-- to the columns it uses plus a few neighbours, and four Luma products
-- (three simple, one configurable), with a store view 1 name that the
-- default scope (store 0) must not pick up.

CREATE TABLE eav_entity_type (
  entity_type_id smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  entity_type_code varchar(50) NOT NULL,
  PRIMARY KEY (entity_type_id),
  KEY EAV_ENTITY_TYPE_ENTITY_TYPE_CODE (entity_type_code)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE eav_attribute (
  attribute_id smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  entity_type_id smallint(5) unsigned NOT NULL DEFAULT 0,
  attribute_code varchar(255) NOT NULL,
  backend_type varchar(8) NOT NULL DEFAULT 'static',
  frontend_label varchar(255) DEFAULT NULL,
  PRIMARY KEY (attribute_id),
  UNIQUE KEY EAV_ATTRIBUTE_ENTITY_TYPE_ID_ATTRIBUTE_CODE (entity_type_id, attribute_code)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE catalog_product_entity (
  entity_id int(10) unsigned NOT NULL AUTO_INCREMENT,
  attribute_set_id smallint(5) unsigned NOT NULL DEFAULT 0,
  type_id varchar(32) NOT NULL DEFAULT 'simple',
  sku varchar(64) NOT NULL,
  has_options smallint(6) NOT NULL DEFAULT 0,
  required_options smallint(5) unsigned NOT NULL DEFAULT 0,
  created_at timestamp NOT NULL DEFAULT current_timestamp(),
  updated_at timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (entity_id),
  KEY CATALOG_PRODUCT_ENTITY_SKU (sku)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE catalog_product_entity_varchar (
  value_id int(11) NOT NULL AUTO_INCREMENT,
  attribute_id smallint(5) unsigned NOT NULL DEFAULT 0,
  store_id smallint(5) unsigned NOT NULL DEFAULT 0,
  entity_id int(10) unsigned NOT NULL DEFAULT 0,
  value varchar(255) DEFAULT NULL,
  PRIMARY KEY (value_id),
  UNIQUE KEY CATALOG_PRODUCT_ENTITY_VARCHAR_ENTITY_ID_ATTRIBUTE_ID_STORE_ID (entity_id, attribute_id, store_id)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE catalog_product_entity_decimal (
  value_id int(11) NOT NULL AUTO_INCREMENT,
  attribute_id smallint(5) unsigned NOT NULL DEFAULT 0,
  store_id smallint(5) unsigned NOT NULL DEFAULT 0,
  entity_id int(10) unsigned NOT NULL DEFAULT 0,
  value decimal(20,6) DEFAULT NULL,
  PRIMARY KEY (value_id),
  UNIQUE KEY CATALOG_PRODUCT_ENTITY_DECIMAL_ENTITY_ID_ATTRIBUTE_ID_STORE_ID (entity_id, attribute_id, store_id)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE cataloginventory_stock_item (
  item_id int(10) unsigned NOT NULL AUTO_INCREMENT,
  product_id int(10) unsigned NOT NULL DEFAULT 0,
  stock_id smallint(5) unsigned NOT NULL DEFAULT 0,
  qty decimal(12,4) DEFAULT NULL,
  is_in_stock smallint(5) unsigned NOT NULL DEFAULT 0,
  PRIMARY KEY (item_id),
  UNIQUE KEY CATALOGINVENTORY_STOCK_ITEM_PRODUCT_ID_STOCK_ID (product_id, stock_id)
) DEFAULT CHARSET=utf8mb4;

INSERT INTO eav_entity_type (entity_type_id, entity_type_code) VALUES
  (1, 'customer'), (3, 'catalog_category'), (4, 'catalog_product');

INSERT INTO eav_attribute (attribute_id, entity_type_id, attribute_code, backend_type, frontend_label) VALUES
  (45, 3, 'name', 'varchar', 'Name'),
  (73, 4, 'name', 'varchar', 'Product Name'),
  (77, 4, 'price', 'decimal', 'Price'),
  (82, 4, 'weight', 'decimal', 'Weight');

INSERT INTO catalog_product_entity (entity_id, attribute_set_id, type_id, sku) VALUES
  (1, 15, 'simple', '24-MB01'),
  (4, 15, 'simple', '24-MB04'),
  (7, 15, 'simple', '24-WB04'),
  (67, 9, 'configurable', 'MH01');

INSERT INTO catalog_product_entity_varchar (attribute_id, store_id, entity_id, value) VALUES
  (73, 0, 1, 'Joust Duffle Bag'),
  (73, 1, 1, 'Joust Duffle Bag (store view)'),
  (73, 0, 4, 'Strive Shoulder Pack'),
  (73, 0, 7, 'Overnight Duffle'),
  (73, 0, 67, 'Chaz Kangeroo Hoodie'),
  (45, 0, 1, 'a category name that shares the entity id');

INSERT INTO catalog_product_entity_decimal (attribute_id, store_id, entity_id, value) VALUES
  (77, 0, 1, 34.000000),
  (77, 1, 1, 30.000000),
  (82, 0, 1, 1.000000),
  (77, 0, 4, 32.000000),
  (77, 0, 7, 45.000000);

INSERT INTO cataloginventory_stock_item (product_id, stock_id, qty, is_in_stock) VALUES
  (1, 1, 100.0000, 1),
  (4, 1, 0.0000, 0),
  (7, 1, 100.0000, 1),
  (67, 1, 0.0000, 1);
