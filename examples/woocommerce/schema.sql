-- A small WooCommerce catalog: the two WordPress tables the example's query
-- reads, as WordPress creates them (zero dates included), and a few
-- products: simple ones, a variable product with two variations, a draft
-- and a trashed product (neither is synced).

CREATE TABLE wp_posts (
  ID bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  post_author bigint(20) unsigned NOT NULL DEFAULT 0,
  post_date datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_date_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_content longtext NOT NULL,
  post_title text NOT NULL,
  post_excerpt text NOT NULL,
  post_status varchar(20) NOT NULL DEFAULT 'publish',
  post_name varchar(200) NOT NULL DEFAULT '',
  post_modified datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_modified_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_parent bigint(20) unsigned NOT NULL DEFAULT 0,
  menu_order int(11) NOT NULL DEFAULT 0,
  post_type varchar(20) NOT NULL DEFAULT 'post',
  PRIMARY KEY (ID),
  KEY post_name (post_name(191)),
  KEY type_status_date (post_type, post_status, post_date, ID),
  KEY post_parent (post_parent)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE wp_postmeta (
  meta_id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  post_id bigint(20) unsigned NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL,
  meta_value longtext,
  PRIMARY KEY (meta_id),
  KEY post_id (post_id),
  KEY meta_key (meta_key(191))
) DEFAULT CHARSET=utf8mb4;

INSERT INTO wp_posts (ID, post_date, post_content, post_title, post_excerpt, post_status, post_name, post_parent, post_type) VALUES
  (10, '2024-03-01 09:00:00', '', 'Hoodie', '', 'publish', 'hoodie', 0, 'product'),
  (11, '2024-03-01 09:05:00', '', 'Beanie', '', 'publish', 'beanie', 0, 'product'),
  (12, '0000-00-00 00:00:00', '', 'Belt (coming soon)', '', 'draft', 'belt', 0, 'product'),
  (13, '2023-01-01 00:00:00', '', 'Old Cap', '', 'trash', 'old-cap', 0, 'product'),
  (20, '2024-03-02 10:00:00', '', 'T-Shirt', '', 'publish', 't-shirt', 0, 'product'),
  (21, '2024-03-02 10:01:00', '', 'T-Shirt - Red, M', '', 'publish', 't-shirt-red-m', 20, 'product_variation'),
  (22, '2024-03-02 10:02:00', '', 'T-Shirt - Blue, L', '', 'private', 't-shirt-blue-l', 20, 'product_variation'),
  (30, '2024-03-03 08:00:00', 'Hello world', 'Hello world!', '', 'publish', 'hello-world', 0, 'post');

INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES
  (10, '_sku', 'WOO-HOODIE'), (10, '_price', '42.00'), (10, '_regular_price', '42.00'), (10, '_stock', '12'), (10, '_manage_stock', 'yes'),
  (11, '_sku', 'WOO-BEANIE'), (11, '_price', '18'), (11, '_stock', NULL), (11, '_manage_stock', 'no'),
  (12, '_sku', 'WOO-BELT'), (12, '_price', '25'),
  (13, '_sku', 'WOO-DRAFT-TRASHED'), (13, '_price', '9'),
  (20, '_sku', 'WOO-TEE'), (20, '_price', '18.50'),
  (21, '_sku', 'WOO-TEE-RED-M'), (21, '_price', '18.50'), (21, '_stock', '5'), (21, 'attribute_pa_color', 'red'),
  (22, '_sku', 'WOO-TEE-BLUE-L'), (22, '_price', '19.00'), (22, '_stock', '0'), (22, 'attribute_pa_color', 'blue'),
  (30, '_edit_lock', '1709456400:1');
